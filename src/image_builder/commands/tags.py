"""``image-builder tags``: compute the tags for this CI event and print them as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from image_builder.atomic import write_atomic
from image_builder.config import load_config
from image_builder.context import detect_ci_context
from image_builder.envfile import read_env_file
from image_builder.paths import context_root, inside
from image_builder.tags import (
    Tag,
    decode_tags_base64,
    default_specs,
    parse_tag_arg,
    render_tags,
    template_values,
)


@dataclass(frozen=True, kw_only=True)
class TagsOptions:
    config: Path | None
    tags: tuple[str, ...] = ()
    tag_base64: str | None = None
    env_file: str | None = None
    context: str = "."
    dockerfile: str = "Dockerfile"
    tags_output_file: Path | None = None


def compute_tags(options: TagsOptions, *, env: Mapping[str, str], now: datetime) -> list[Tag]:
    """The default tag for the event first, then the user's tags, rendered and validated."""
    config = load_config(options.config)
    root = context_root(options.context)
    dockerfile = inside(root, root, options.dockerfile, "--dockerfile")
    entries = read_env_file(root, dockerfile, options.env_file) if options.env_file else {}
    ctx = detect_ci_context(env, root)
    specs = default_specs(config, ctx)
    specs += [parse_tag_arg(text) for text in options.tags]
    if options.tag_base64:
        specs += decode_tags_base64(options.tag_base64)
    values = template_values(
        ctx, now=now, env=env, env_file=entries, allowed_env=config.tag_template_env
    )
    return render_tags(specs, values)


def tags_json(tags: list[Tag]) -> str:
    return json.dumps([{"name": t.name, "value": t.value} for t in tags])


def run_tags(options: TagsOptions, *, env: Mapping[str, str], now: datetime) -> str:
    """Compute the tags, write ``--tags-output-file`` if asked, and return the JSON to print."""
    text = tags_json(compute_tags(options, env=env, now=now))
    if options.tags_output_file is not None:
        write_atomic(options.tags_output_file, text + "\n")
    return text
