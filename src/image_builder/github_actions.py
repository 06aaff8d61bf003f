"""GitHub Actions: the OIDC token endpoint of the runner, and the composite action's inputs.
The only module that talks to the runner's token service."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from image_builder.errors import InputError, RuntimeFailure

if TYPE_CHECKING:
    from image_builder.commands.build import BuildOptions

PERMISSION_HINT = (
    "the calling workflow needs `permissions: id-token: write` (on the job or the workflow) for "
    "GitHub to issue OIDC tokens"
)


def request_oidc_token(
    audience: str, env: Mapping[str, str], *, http: httpx.Client | None = None
) -> str:
    """Ask the runner's token service for a token with ``audience``."""
    url = env.get("ACTIONS_ID_TOKEN_REQUEST_URL")
    bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
    if not url or not bearer:
        missing = "ACTIONS_ID_TOKEN_REQUEST_URL" if not url else "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
        raise InputError(f"{missing} is not set: {PERMISSION_HINT}")
    client = http or httpx.Client(timeout=httpx.Timeout(15.0), trust_env=False)
    request_url = httpx.URL(url).copy_merge_params({"audience": audience})
    try:
        response = client.get(request_url, headers={"Authorization": f"Bearer {bearer}"})
    except httpx.TransportError as exc:
        raise RuntimeFailure(
            f"the runner's token service cannot be reached: {exc.__class__.__name__}"
        ) from None
    if response.status_code != 200:
        raise RuntimeFailure(
            f"the runner's token service answered HTTP {response.status_code}; {PERMISSION_HINT}"
        )
    try:
        token = str(response.json()["value"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeFailure("the runner's token service answered without a token value") from None
    if token.count(".") != 2:
        raise RuntimeFailure("the runner's token service returned something that is not a JWT")
    return token


def lines(value: str) -> tuple[str, ...]:
    """A multi-line action input: one item per non-blank line, surrounding spaces removed."""
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def action_options(env: Mapping[str, str]) -> tuple[BuildOptions, str | None]:
    """The composite action's inputs, passed as ``IB_INPUT_*`` variables (never as script text),
    as build options and the chosen backend."""
    from image_builder.commands.build import BuildOptions

    def get(name: str) -> str:
        return env.get(f"IB_INPUT_{name}", "")

    name = get("NAME").strip() or env.get("GITHUB_REPOSITORY", "").rsplit("/", 1)[-1].lower()
    if not name:
        raise InputError(
            "input 'name' is empty and GITHUB_REPOSITORY is not set; pass the image name"
        )
    export = get("EXPORT_TAGS").strip().lower()
    if export not in ("", "true", "false"):
        raise InputError(f"input 'export-tags' must be true or false, got {get('EXPORT_TAGS')!r}")
    backend = get("BACKEND").strip() or None
    if backend not in (None, "ado", "local"):
        raise InputError(f"input 'backend' must be ado or local, got {backend!r}")
    config = get("CONFIG").strip()
    options = BuildOptions(
        name=name,
        dockerfile=get("DOCKERFILE").strip() or "Dockerfile",
        context=get("CONTEXT").strip() or ".",
        config=Path(config) if config else None,
        env_file=get("ENV_FILE").strip() or None,
        build_args=lines(get("BUILD_ARGS")),
        tags=lines(get("TAGS")),
        export_tags=export == "true",
        platforms=lines(get("PLATFORMS")) or ("linux/amd64", "linux/arm64"),
        target=get("TARGET").strip() or None,
        build_report_path=Path(env["IB_INPUT_BUILD_REPORT_PATH"])
        if env.get("IB_INPUT_BUILD_REPORT_PATH")
        else None,
    )
    return options, backend


def write_output(path: Path, name: str, value: str) -> None:
    from image_builder.ci_output import append, format_outputs

    append(path, format_outputs({name: value}))


def claims_summary(token: str) -> str:
    """The token's non-secret identity claims, for logs (the token itself is never shown)."""
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    keep = ("iss", "aud", "repository", "event_name", "ref", "job_workflow_ref")
    return json.dumps({k: claims.get(k) for k in keep})
