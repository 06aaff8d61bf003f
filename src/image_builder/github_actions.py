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
    from image_builder.commands.ado_build import AdoOptions
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


def action_options(env: Mapping[str, str]) -> tuple[BuildOptions, AdoOptions, str | None]:
    """The composite action's inputs, passed as ``IB_INPUT_*`` variables (never as script text),
    as build options, Azure DevOps credentials and the chosen backend. The Go action's input
    names (``image-name``, ``oidc-token``, ``azure-*``) work too."""
    from image_builder.commands.ado_build import AdoOptions
    from image_builder.commands.build import BuildOptions

    def get(name: str) -> str:
        return env.get(f"IB_INPUT_{name}", "").strip()

    def flag(name: str, input_name: str) -> bool:
        value = get(name).lower()
        if value not in ("", "true", "false"):
            raise InputError(f"input '{input_name}' must be true or false, got {get(name)!r}")
        return value == "true"

    name, image_name = get("NAME"), get("IMAGE_NAME")
    if name and image_name and name != image_name:
        raise InputError(
            f"inputs 'name' ({name!r}) and 'image-name' ({image_name!r}) differ; give only one"
        )
    name = name or image_name or env.get("GITHUB_REPOSITORY", "").rsplit("/", 1)[-1].lower()
    if not name:
        raise InputError(
            "input 'name' is empty and GITHUB_REPOSITORY is not set; pass the image name"
        )
    backend = get("BACKEND") or None
    if backend not in (None, "ado", "local"):
        raise InputError(f"input 'backend' must be ado or local, got {backend!r}")
    config = get("CONFIG")
    options = BuildOptions(
        name=name,
        dockerfile=get("DOCKERFILE") or "Dockerfile",
        context=get("CONTEXT") or ".",
        config=Path(config) if config else None,
        env_file=get("ENV_FILE") or None,
        build_args=lines(get("BUILD_ARGS")),
        tags=lines(get("TAGS")),
        export_tags=flag("EXPORT_TAGS", "export-tags"),
        platforms=lines(get("PLATFORMS")) or ("linux/amd64", "linux/arm64"),
        target=get("TARGET") or None,
        secrets=lines(get("SECRETS")),
        use_go_internal_sap_modules=flag(
            "USE_GO_INTERNAL_SAP_MODULES", "use-go-internal-sap-modules"
        ),
        use_restricted_registry=flag("USE_RESTRICTED_REGISTRY", "use-restricted-registry"),
        dry_run=flag("DRY_RUN", "dry-run"),
        oidc_token=get("OIDC_TOKEN") or None,
        build_report_path=Path(env["IB_INPUT_BUILD_REPORT_PATH"])
        if env.get("IB_INPUT_BUILD_REPORT_PATH")
        else None,
    )
    ado = AdoOptions(
        client_id=get("AZURE_CLIENT_ID") or None,
        client_secret=get("AZURE_CLIENT_SECRET") or None,
        tenant_id=get("AZURE_TENANT_ID") or None,
    )
    return options, ado, backend


def write_output(path: Path, name: str, value: str) -> None:
    from image_builder.ci_output import append, format_outputs

    append(path, format_outputs({name: value}))


def claims_summary(token: str) -> str:
    """The token's non-secret identity claims, for logs (the token itself is never shown)."""
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    keep = ("iss", "aud", "repository", "event_name", "ref", "job_workflow_ref")
    return json.dumps({k: claims.get(k) for k in keep})
