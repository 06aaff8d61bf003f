"""What every command reads first: config, the build context, the env file, the CI context."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Protocol

from image_builder.config import Config, load_config
from image_builder.context import CIContext, detect_ci_context
from image_builder.envfile import read_env_file
from image_builder.paths import checkout_root, context_root, inside
from image_builder.tags import TagSet, TagSpec, event_specs, template_values
from image_builder.tags import resolve_tags as resolve_tag_set


@dataclass(frozen=True, kw_only=True)
class Inputs:
    config: Config
    root: Path
    dockerfile: Path
    env_file: dict[str, str]
    ctx: CIContext


def load_inputs(
    *,
    config: Config,
    context: str,
    dockerfile: str,
    env_file: str | None,
    env: Mapping[str, str],
    checkout: str | None = None,
) -> Inputs:
    top = checkout_root(checkout, Path.cwd())
    root = context_root(context, top)
    dockerfile_path = inside(root, root, dockerfile, "--dockerfile")
    entries = read_env_file(root, dockerfile_path, env_file) if env_file else {}
    ctx = detect_ci_context(env, root)
    if ctx.ci == "local" and ctx.commit_sha is not None:
        # A CI system builds a commit; a laptop builds whatever the tree holds.
        from image_builder.git import unclean

        ctx = replace(ctx, dirty=unclean(top, root, env))
    return Inputs(config=config, root=root, dockerfile=dockerfile_path, env_file=entries, ctx=ctx)


class SourceOptions(Protocol):
    """What every command's options say about where the build's inputs are."""

    @property
    def config(self) -> Path | None: ...
    @property
    def context(self) -> str: ...
    @property
    def dockerfile(self) -> str: ...
    @property
    def env_file(self) -> str | None: ...
    @property
    def checkout(self) -> str | None: ...


def load_inputs_for(
    options: SourceOptions, env: Mapping[str, str], *, config: Config | None = None
) -> Inputs:
    """The inputs ``options`` name; ``config`` when the caller has loaded it already."""
    return load_inputs(
        config=load_config(options.config) if config is None else config,
        context=options.context,
        dockerfile=options.dockerfile,
        env_file=options.env_file,
        env=env,
        checkout=options.checkout,
    )


def resolve_tags(
    inputs: Inputs,
    *,
    tags: Sequence[str],
    tag_base64: str | None,
    env: Mapping[str, str],
    now: datetime,
) -> TagSet:
    """The event's tags (see :func:`image_builder.tags.event_specs` for the order), with the
    release-only ones this build may not move dropped."""
    return specs_and_tags(inputs, tags=tags, tag_base64=tag_base64, env=env, now=now)[1]


def specs_and_tags(
    inputs: Inputs,
    *,
    tags: Sequence[str],
    tag_base64: str | None,
    env: Mapping[str, str],
    now: datetime,
) -> tuple[list[TagSpec], TagSet]:
    """As :func:`resolve_tags`, and the specs before rendering, each with its source."""
    values = template_values(
        inputs.ctx,
        now=now,
        env=env,
        env_file=inputs.env_file,
        allowed_env=inputs.config.tag_template_env,
    )
    specs = event_specs(
        inputs.config, inputs.ctx, tags=tags, tag_base64=tag_base64, version=values.version
    )
    return specs, resolve_tag_set(inputs.config, inputs.ctx, specs, values)


def token_from(flag: str | None, env: Mapping[str, str]) -> str | None:
    """The caller's OIDC token: ``--oidc-token``/``--token``, else ``AUTHORIZATION``. Lives here,
    not in trust.py, so commands can mask it without importing the JWT stack."""
    value = flag or env.get("AUTHORIZATION") or None
    return value.strip() if value else None
