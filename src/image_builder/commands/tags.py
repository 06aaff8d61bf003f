"""``image-builder tags``: compute the tags for this CI event and print them as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from image_builder.atomic import write_atomic
from image_builder.commands.inputs import load_inputs_for, resolve_tags
from image_builder.errors import InputError
from image_builder.paths import STREAM
from image_builder.tags import Tag, dirty_notice


@dataclass(frozen=True, kw_only=True)
class TagsOptions:
    config: Path | None
    tags: tuple[str, ...] = ()
    tag_base64: str | None = None
    env_file: str | None = None
    checkout: str | None = None
    context: str = "."
    dockerfile: str = "Dockerfile"
    tags_output_file: Path | None = None


def compute_tags(
    options: TagsOptions,
    *,
    env: Mapping[str, str],
    now: datetime,
    warn: Callable[[str], None] = lambda _: None,
) -> list[Tag]:
    inputs = load_inputs_for(options, env)
    for notice in inputs.config.notices:
        warn(notice)
    if inputs.ctx.dirty:
        warn(dirty_notice(inputs.ctx.dirty, inputs.ctx.commit_sha))
    resolved = resolve_tags(
        inputs, tags=options.tags, tag_base64=options.tag_base64, env=env, now=now
    )
    for dropped in resolved.dropped:
        warn(dropped.notice())
    return list(resolved.tags)


def tags_json(tags: list[Tag]) -> str:
    return json.dumps([t.to_json() for t in tags])


def run_tags(
    options: TagsOptions,
    *,
    env: Mapping[str, str],
    now: datetime,
    warn: Callable[[str], None] = lambda _: None,
) -> str:
    """Compute the tags, write ``--tags-output-file`` if asked, and return the JSON to print."""
    tags = compute_tags(options, env=env, now=now, warn=warn)
    # "-": stdout, which gets the JSON this returns in any case
    if options.tags_output_file is not None and options.tags_output_file != STREAM:
        write_tags_file(options.tags_output_file, tags)
    return tags_json(tags)


def write_tags_file(path: Path, tags: list[Tag]) -> None:
    """The tags as the Go tool wrote them to ``--tags-output-file``; ``-`` is stdout."""
    from image_builder.commands.outputs import why_unwritable

    if path == STREAM:
        # The bytes the file would get, also for the callers that have no reporter at hand.
        sys.stdout.write(tags_json(tags) + "\n")
        sys.stdout.flush()
        return
    try:
        write_atomic(path, tags_json(tags) + "\n", mode=0o644)  # tags are no secret; as Go
    except OSError as exc:
        raise InputError(
            f"cannot write --tags-output-file {path}: {why_unwritable(path, exc)}; pass a "
            "writable path (or --tags-output-file= to write none)"
        ) from None
