"""``image-builder github oidc-token|action``: the runner's OIDC token into a step output, and the
composite action's build, whose inputs arrive as ``IB_INPUT_*`` variables."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from image_builder.commands.ado_build import AdoOptions
from image_builder.commands.build import BuildOptions
from image_builder.errors import InputError, UsageError
from image_builder.reporter import Reporter


@dataclass(frozen=True, kw_only=True)
class OidcTokenOptions:
    audience: str = "image-builder"
    output: str = "token"  # the step output's name


def run_oidc_token(options: OidcTokenOptions, *, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder import ci_output, github_actions

    token = github_actions.request_oidc_token(options.audience, env)
    reporter.mask(token)
    if not env.get("GITHUB_OUTPUT"):
        raise UsageError("GITHUB_OUTPUT is not set: run this inside a GitHub Actions step")
    ci_output.append(Path(env["GITHUB_OUTPUT"]), ci_output.format_outputs({options.output: token}))
    reporter.result(
        f"OIDC token written to output '{options.output}': {github_actions.claims_summary(token)}"
    )
    return 0


@dataclass(frozen=True, kw_only=True)
class ActionBuild:
    """What the composite action asks for: a build, where to run it, and with what credentials."""

    options: BuildOptions
    ado: AdoOptions
    backend: str | None  # None: as config.yaml says


def lines(value: str) -> tuple[str, ...]:
    """A multi-line action input: one item per non-blank line, surrounding spaces removed."""
    return tuple(line.strip() for line in value.splitlines() if line.strip())


def action_build(env: Mapping[str, str]) -> ActionBuild:
    """The composite action's inputs, passed as ``IB_INPUT_*`` variables (never as script text),
    as build options, Azure DevOps credentials and the chosen backend. The Go action's input
    names (``image-name``, ``oidc-token``, ``azure-*``) work too."""

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
    return ActionBuild(options=options, ado=ado, backend=backend)
