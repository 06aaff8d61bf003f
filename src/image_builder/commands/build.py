"""``image-builder build``: plan, build with buildah, push to every reference, report."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.commands.inputs import load_inputs_for, resolve_tags, token_from
from image_builder.commands.outputs import check_writable, publish_report, write_error
from image_builder.commands.shared import consume_token, registry_client
from image_builder.config import Config
from image_builder.errors import InputError, RuntimeFailure
from image_builder.plan import BuildPlan, make_plan, parse_build_args
from image_builder.platforms import parse_platforms
from image_builder.reporter import Reporter

if TYPE_CHECKING:
    from image_builder.backends.local import ProvenanceInputs
    from image_builder.engines import Engine
    from image_builder.sandbox import BuildAccount
    from image_builder.secrets import SecretSource
    from image_builder.trust import VerifiedClaims


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    name: str
    context: str = "."
    dockerfile: str = "Dockerfile"
    config: Path | None = None
    tags: tuple[str, ...] = ()
    tag_base64: str | None = None
    build_args: tuple[str, ...] = ()
    env_file: str | None = None
    checkout: str | None = None
    platforms: tuple[str, ...] = ()
    target: str | None = None
    export_tags: bool = False
    repo: str | None = None
    oidc_token: str | None = None
    dry_run: bool = False
    no_push: bool = False
    build_report_path: Path | None = None
    # The stages of a split pipeline: build only (no secrets) into an OCI layout; publish a
    # layout that a build job made; leave signing to a later `sign --from-report`.
    layout_out: Path | None = None
    from_layout: Path | None = None
    no_sign: bool = False
    # Build secrets: `id=NAME,src=FILE` or `id=NAME,env=VAR`, mounted with
    # RUN --mount=type=secret,id=NAME; never a build argument, never stored in the image.
    secrets: tuple[str, ...] = ()
    # The Go tool's flags: base images only from config's restricted-registries; mount config's
    # go-internal-sap-modules credential as a build secret.
    use_restricted_registry: bool = False
    use_go_internal_sap_modules: bool = False
    tags_output_file: Path | None = None  # the tags as the Go tool's JSON, as in `tags`


def prepare(
    options: BuildOptions,
    *,
    config: Config,
    env: Mapping[str, str],
    now: datetime,
    host_platform: str,
    verify: bool = True,
) -> tuple[BuildPlan, VerifiedClaims | None]:
    """The plan made with ``config`` (loaded from ``options.config``), and the caller's verified
    claims. Builds, pushes and signs nothing. It reads files and the build
    secrets; runs git (the commit time of reproducible builds; whether a local tree is clean);
    and, with a trust policy, verifies the caller's token, which fetches the issuer's keys and
    may ask GitHub for a pull request's head commit. Without ``verify`` the token is not
    checked: only for the build stage, which publishes nothing and holds no credential of its
    own."""
    from image_builder.plan import gives_secrets
    from image_builder.secrets import BuildSecret
    from image_builder.secrets import load as load_secret

    inputs = load_inputs_for(options, env, config=config)
    # The publish stage builds nothing: it reads no build secret and pulls no base image.
    builds = options.from_layout is None
    sources = secret_sources(options, inputs.config, inputs.root, env) if builds else []
    if options.use_restricted_registry and not inputs.config.restricted_registries:
        raise InputError(
            "--use-restricted-registry needs restricted-registries in config.yaml (registry "
            "host[/path] prefixes, e.g. cgr.dev/sap.com); add them, or drop the flag"
        )
    signing_block = None
    claims = None
    if inputs.config.trust and verify:
        from image_builder.trust import verify_caller

        claims = verify_caller(
            inputs.config.trust,
            inputs.ctx,
            token_from(options.oidc_token, env),
            repo_flag=options.repo,
            env=env,
            names=[options.name],
        )
        if not claims.signing_allowed:
            signing_block = claims.signing_reason
    if not inputs.dockerfile.is_file():
        raise InputError(
            f"Dockerfile {options.dockerfile!r} does not exist in the build context {inputs.root}; "
            "--dockerfile is relative to --context"
        )
    dockerfile = ""
    if builds:  # before any token is spent or any registry asked
        from image_builder.dockerfile import check_syntax

        label = str(inputs.dockerfile.relative_to(inputs.root))
        dockerfile = read_dockerfile(inputs.dockerfile, label)
        check_syntax(dockerfile, label=label)
    tags = resolve_tags(inputs, tags=options.tags, tag_base64=options.tag_base64, env=env, now=now)
    platforms = (
        parse_platforms(options.platforms)
        or parse_platforms(inputs.config.platforms)
        or (host_platform,)
    )
    commit_time = None
    if inputs.config.reproducible:
        from image_builder.git import commit_time as git_commit_time

        commit_time = git_commit_time(inputs.root, inputs.ctx.commit_sha, env)
    given: list[BuildSecret] = []
    withheld: list[str] = []
    if gives_secrets(inputs.config, inputs.ctx.job_type):
        given = [load_secret(source, env) for source in sources]
    else:
        withheld = [source.id for source in sources]
    plan = make_plan(
        config=inputs.config,
        ctx=inputs.ctx,
        tags=tags.tags,
        dropped_tags=tags.dropped,
        name=options.name,
        context_dir=inputs.root,
        dockerfile=inputs.dockerfile,
        platforms=platforms,
        build_args=parse_build_args(
            options.build_args, env, trusted_side=bool(inputs.config.trust)
        ),
        env_file_args=inputs.env_file,
        export_tags=options.export_tags,
        target=options.target,
        push=not options.no_push,
        now=now,
        commit_time=commit_time,
        repo_override=options.repo,
        signing_block=signing_block,
        secrets=given,
        withheld_secrets=withheld,
        restricted_registries=inputs.config.restricted_registries
        if options.use_restricted_registry and builds
        else (),
    )
    if plan.restricted_registries:
        check_base_images(plan, dockerfile, host_platform)
    from dataclasses import replace

    from image_builder.provenance import identity

    return replace(plan, who=identity(inputs.ctx, claims)), claims


def withheld_notice(plan: BuildPlan) -> str:
    return (
        f"build secrets withheld from this {plan.job_type} build, whose Dockerfile comes from "
        f"the pull request: {', '.join(plan.withheld_secrets)}; set secrets-for-presubmits: "
        "true in config.yaml to mount them"
    )


def secret_sources(
    options: BuildOptions, config: Config, context: Path, env: Mapping[str, str]
) -> list[SecretSource]:
    """The build secrets asked for, checked for form and place; nothing is read yet. On the
    trusted side only the config's own exist: a caller's ``--secret`` would read files and
    variables of the trusted machine (its signing key, its registry credentials)."""
    if options.secrets and config.trust:
        raise InputError(
            "--secret is refused with a trust policy: it would read files and variables of this "
            "trusted machine; the config declares the secrets a build may get "
            "(go-internal-sap-modules, mounted with --use-go-internal-sap-modules)"
        )
    from image_builder.secrets import SecretSource, check_id, check_sources, parse_flag

    sources = [parse_flag(text) for text in options.secrets]
    if options.use_go_internal_sap_modules:
        declared = config.go_internal_sap_modules
        if declared is None:
            raise InputError(
                "--use-go-internal-sap-modules needs go-internal-sap-modules in config.yaml (its "
                "id, and file or env: where the credential is); add it, or drop the flag"
            )
        origin = "go-internal-sap-modules in config.yaml"
        check_id(declared.id, origin)
        sources.append(
            SecretSource(
                id=declared.id,
                file=Path(declared.file) if declared.file is not None else None,
                env=declared.env,
                origin=origin,
            )
        )
    if sources:
        files, variables = own_secrets(config, env)
        check_sources(sources, context=context, protected_files=files, protected_env=variables)
    return sources


def own_secrets(config: Config, env: Mapping[str, str]) -> tuple[list[Path], list[str]]:
    """image-builder's own credential files and secret variables: no build account may read
    them, and no build secret may carry them."""
    from image_builder import sandbox
    from image_builder.registry import auth_files

    files = list(auth_files(env))
    variables = list(sandbox.SECRET_VARIABLES)
    variables += [t.github_api_token_env for t in config.trust if t.github_api_token_env]
    for signer in config.sign_config.signers:
        if signer.type == "cosign":
            files.append(Path(signer.config.private_key))
            if signer.config.password_env:
                variables.append(signer.config.password_env)
        else:
            files.append(Path(signer.config.secret.path))
    return files, variables


def check_base_images(plan: BuildPlan, dockerfile: str, host_platform: str) -> None:
    """--use-restricted-registry, before anything runs: every image the Dockerfile names comes
    from under ``plan.restricted_registries``. The build's containers policy enforces the same
    again when buildah pulls."""
    from image_builder.dockerfile import check_restricted

    label = str(plan.dockerfile.relative_to(plan.context_dir))
    check_restricted(
        dockerfile,
        label=label,
        build_args=dict(plan.build_args),
        platforms=plan.platforms,
        build_platform=host_platform,
        prefixes=plan.restricted_registries,
    )


def read_dockerfile(path: Path, label: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InputError(f"cannot read {label}: {exc.strerror}; make it readable") from None


def run_build(
    options: BuildOptions,
    *,
    config: Config,
    env: Mapping[str, str],
    reporter: Reporter,
    now: datetime,
    host_platform: str,
    euid: int,
) -> int:
    """Build here (``--backend local``) with ``config``, loaded from ``options.config``."""
    reporter.mask(token_from(options.oidc_token, env) or "")
    check_stages(options)
    plan, claims = prepare(
        options,
        env=env,
        now=now,
        host_platform=host_platform,
        verify=options.layout_out is None,
        config=config,
    )
    for secret in plan.secrets:
        reporter.mask(secret.value.decode("utf-8", errors="replace"))  # and each of its lines
    reporter = reporter.with_format(config.log_format)
    for notice in config.notices:
        reporter.warning(notice)
    for notice in plan.notices:
        reporter.warning(notice)
    if plan.withheld_secrets:
        reporter.warning(withheld_notice(plan))
    if options.tags_output_file is not None:
        from image_builder.commands.tags import write_tags_file

        write_tags_file(options.tags_output_file, list(plan.tags))
    if options.dry_run:
        reporter.result(json.dumps(plan.to_json(), indent=2))
        return 0
    if options.build_report_path is not None:
        check_writable(options.build_report_path, "--build-report-path")

    from image_builder.backends.local import execute
    from image_builder.signing.factory import make_signers, provenance
    from image_builder.skopeo import SkopeoPublisher

    engine: Engine
    if options.from_layout is not None:
        from image_builder.engines.prebuilt import PrebuiltEngine

        engine = PrebuiltEngine(options.from_layout)
    else:
        from image_builder.engines.buildah import BuildahEngine

        buildah = BuildahEngine(
            env=env,
            host_platform=host_platform,
            accounts=build_accounts(config, env=env, reporter=reporter, euid=euid),
            storage_driver=config.storage_driver,
            on_line=reporter.stream,
            build_timeout=config.build_timeout.total_seconds(),
            lock_timeout=config.lock_timeout.total_seconds(),
        )
        swept = buildah.sweep()
        if swept:
            reporter.info(
                f"removed {len(swept)} work folder(s) that earlier, stopped runs left behind"
            )
        engine = buildah
    if options.layout_out is not None:
        return build_stage(plan, engine, options.layout_out, reporter)
    registry = registry_client(config, env)
    signers = make_signers(
        config,
        () if options.no_sign else plan.running_signers,
        registry=registry,
        env=env,
        optional=provenance(plan.repository, plan.ref, plan.commit_sha),
        on_retry=reporter.warning,
    )
    publisher = SkopeoPublisher(env=env, on_line=reporter.stream, on_detail=reporter.detail)
    from image_builder import proc

    recorder = provenance_inputs(plan, config, options, env=env, host_platform=host_platform)

    if proc.CHILDREN.stopping:  # a signal during set-up: stop before the token is spent
        raise proc.Cancelled(f"stopped by {proc.CHILDREN.reason} before the build started")
    if claims is not None and plan.push:
        # Spent once every set-up check has passed (build accounts, signers), and before any work.
        signs = bool(plan.running_signers) and not options.no_sign
        consume_token(config, claims, ("build", "sign") if signs else ("build",), env, euid)
    report = execute(
        plan,
        engine,
        publisher,
        reporter,
        registry=registry,
        signers=signers.__getitem__,
        sign=not options.no_sign,
        atomic=config.publish_mode == "atomic",
        publish_timeout=config.publish_timeout.total_seconds(),
        provenance=recorder,
    )
    publish_report(report, report_path=options.build_report_path, env=env, reporter=reporter)
    if report.status != "Succeeded":
        reporter.error(report.error or "the build failed")
        return 1
    reporter.info(
        f"pushed {report.digest} as {', '.join(report.tags)} to "
        f"{len(plan.destinations)} repositor{'y' if len(plan.destinations) == 1 else 'ies'}"
    )
    if options.no_sign and plan.running_signers:
        reporter.info(
            f"--no-sign: {', '.join(plan.running_signers)} did not sign; run `image-builder sign "
            "--from-report` with the report"
        )
    return 0


def provenance_inputs(
    plan: BuildPlan,
    config: Config,
    options: BuildOptions,
    *,
    env: Mapping[str, str],
    host_platform: str,
) -> ProvenanceInputs | None:
    """What provenance needs beyond the plan, when the plan attaches it."""
    if plan.provenance is None or not plan.provenance.runs or plan.who is None:
        return None
    import uuid

    from image_builder import __version__
    from image_builder.backends.local import ProvenanceInputs
    from image_builder.provenance import builder_and_run, secret_build_args

    label = str(plan.dockerfile.relative_to(plan.context_dir))
    builder, run = builder_and_run(
        config.provenance.builder_id, env, fallback_run=f"urn:uuid:{uuid.uuid4()}"
    )
    from_environment = [arg for arg in options.build_args if "=" not in arg]
    return ProvenanceInputs(
        who=plan.who,
        builder_id=builder,
        invocation_id=run,
        version=__version__,
        dockerfile_text=read_dockerfile(plan.dockerfile, label),
        dockerfile=options.dockerfile,
        context=options.context,
        host_platform=host_platform,
        env_file=options.env_file,
        resolver=registry_client(config, env, anonymous=True),
        withheld=secret_build_args(
            plan.build_args,
            from_environment=from_environment,
            secret_values=[m for s in plan.secrets for m in s.masks()],
            declared=config.provenance.secret_build_args,
        ),
    )


def check_stages(options: BuildOptions) -> None:
    if options.layout_out is not None and (options.from_layout is not None or options.no_push):
        raise InputError(
            "--layout-out builds only; it cannot be combined with --from-layout or --no-push"
        )
    if options.from_layout is not None and options.no_push:
        raise InputError("--from-layout publishes; it cannot be combined with --no-push")


def build_stage(plan: BuildPlan, engine: Engine, target: Path, reporter: Reporter) -> int:
    """Build only, and leave the image as an OCI layout at ``target`` for a publishing job."""
    import shutil

    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"--layout-out {target} exists and is not an empty folder; remove it")
    image = None
    try:
        with reporter.step(f"build {plan.name} for {', '.join(plan.platforms)}"):
            image = engine.build(plan)
        try:
            # File by file, not copytree: its aggregated error carries no errno to name a
            # full disk by.
            for source in sorted(image.layout.path.rglob("*")):
                copy = target / source.relative_to(image.layout.path)
                if source.is_dir():
                    copy.mkdir(parents=True, exist_ok=True)
                else:
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, copy)
        except OSError as exc:
            raise RuntimeFailure(write_error("the image layout", target, exc)) from None
    finally:
        engine.cleanup(image)
    reporter.result(
        json.dumps(
            {
                "layout": str(target),
                "layout_digest": image.layout.digest,
                "platforms": image.layout.platforms,
            }
        )
    )
    return 0


def build_accounts(
    config: Config, *, env: Mapping[str, str], reporter: Reporter, euid: int
) -> list[BuildAccount]:
    """The accounts that may run the Dockerfile's steps, once nothing secret is within reach of
    any of them."""
    from image_builder import sandbox

    accounts = sandbox.choose_accounts(config.build_user, euid=euid)
    check_reach(accounts, config, env)
    if not accounts[0].dedicated:
        reporter.info(
            f"notice: RUN steps run as {accounts[0].name} in a user namespace: image-builder is "
            "not root, so there is no separate build account"
        )
    return accounts


def check_reach(accounts: Sequence[BuildAccount], config: Config, env: Mapping[str, str]) -> None:
    """Refuse to build while any build account could read a key, a credential file, or (when
    the build runs as image-builder's own account) a secret variable."""
    from image_builder import sandbox

    files, secret_env = own_secrets(config, env)
    exposed = sorted(
        {f for a in accounts for f in sandbox.exposed_secrets(a, files, env, secret_env)}
    )
    if not exposed:
        return
    if accounts[0].dedicated:
        raise sandbox.SandboxError(
            f"the build account {config.build_user} could read {', '.join(exposed)}; make each "
            "readable by root only (chown root, chmod 600, and no world-searchable folder "
            "leading to it)"
        )
    raise sandbox.SandboxError(
        f"image-builder runs as {accounts[0].name}, and RUN steps would run as the same account, "
        f"which can read {', '.join(exposed)}; run image-builder as root, so that the build runs "
        f"as the account {config.build_user!r}, or build where no key or credential is present"
    )
