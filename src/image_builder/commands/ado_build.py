"""``image-builder build --backend ado``: the client half. It builds nothing; it validates the
request, triggers the trusted pipeline, shows the run live, cancels it when stopped or out of
time, and brings back its report."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.commands.build import BuildOptions
from image_builder.commands.inputs import load_inputs_for, specs_and_tags
from image_builder.commands.outputs import publish_report
from image_builder.commands.tags import write_tags_file
from image_builder.config import Config
from image_builder.errors import InputError, RuntimeFailure
from image_builder.platforms import parse_platforms
from image_builder.reporter import Reporter

if TYPE_CHECKING:
    from image_builder.backends.ado import AdoClient, Followed
    from image_builder.report import BuildReport


@dataclass(frozen=True, kw_only=True)
class AdoOptions:
    client_id: str | None = None
    client_secret: str | None = None
    tenant_id: str | None = None
    pat: str | None = None
    preview: bool = False
    preview_yaml: Path | None = None


# The caller's own tags; the trusted pipeline adds the config's (additional-pr-tag, semver-tags,
# the default tag) itself.
_CALLER_TAGS = ("--tag", "--tag-base64")


def run_ado_build(
    options: BuildOptions,
    ado: AdoOptions,
    *,
    config: Config,
    env: Mapping[str, str],
    reporter: Reporter,
    now: datetime,
    stop: threading.Event | None = None,
    why_stopped: Callable[[], str] = lambda: "a signal",
) -> int:
    import httpx

    from image_builder.backends.ado import (
        AdoAuthError,
        AdoClient,
        AdoError,
        AdoRequest,
        Follower,
        Limits,
        credentials,
        parameters_json,
        template_parameters,
    )
    from image_builder.commands.inputs import token_from
    from image_builder.http import tls_context
    from image_builder.plan import parse_build_args, validate_name
    from image_builder.proc import mask

    if ado.preview != (ado.preview_yaml is not None):
        raise InputError(
            "--ado-preview-run and --ado-preview-run-yaml-path go together; give both or neither"
        )
    token = token_from(options.oidc_token, env)
    secrets = [
        s
        for s in (
            token,
            ado.client_secret,
            ado.pat,
            env.get("AZURE_CLIENT_SECRET"),
            env.get("AZURE_DEVOPS_EXT_PAT"),
            env.get("ADO_PAT"),
        )
        if s
    ]
    for secret in secrets:
        reporter.mask(secret)
    inputs = load_inputs_for(options, env, config=config)
    ado_config = inputs.config.ado_config
    if ado_config is None:
        raise InputError(
            "--backend ado needs ado-config in config.yaml (organization, project, pipeline id)"
        )
    reporter = reporter.with_format(inputs.config.log_format)
    for notice in inputs.config.notices:
        reporter.warning(notice)
    if options.secrets:
        raise InputError(
            "--secret cannot be sent to Azure DevOps: the trusted pipeline mounts only the "
            "secrets its own config declares (go-internal-sap-modules); drop --secret or build "
            "with --backend local"
        )
    # Rendered here too, so that a broken template fails before the pipeline is triggered.
    specs, rendered = specs_and_tags(
        inputs, tags=options.tags, tag_base64=options.tag_base64, env=env, now=now
    )
    for dropped in rendered.dropped:
        reporter.warning(dropped.notice())
    # The pipeline gets build arguments as given: a bare KEY would send this machine's value of
    # it (a token, in a CI step) into a template parameter that anyone who can read runs reads.
    build_args = tuple(
        f"{k}={v}"
        for k, v in parse_build_args(
            options.build_args,
            env,
            trusted_side=True,
            why="the ADO backend sends build arguments as given, never this machine's values",
        )
    )
    request = AdoRequest(
        name=options.name,
        context=options.context,
        dockerfile=options.dockerfile,
        # The templates travel as the Go tool sent them: name=template, names derived where absent.
        tags=tuple(f"{s.name}={s.template}" for s in specs if s.source in _CALLER_TAGS),
        build_args=build_args,
        platforms=parse_platforms(options.platforms),
        target=options.target,
        export_tags=options.export_tags,
        env_file=options.env_file,
        use_go_internal_sap_modules=options.use_go_internal_sap_modules,
        use_restricted_registry=options.use_restricted_registry,
    )
    validate_name(options.name, (*inputs.config.registry, *inputs.config.dev_registries))
    params = template_parameters(inputs.ctx, request)
    if options.tags_output_file is not None:
        write_tags_file(options.tags_output_file, list(rendered.tags))
    if options.dry_run:  # as the Go tool: the parameters, no token or credentials needed
        reporter.result(parameters_json(params))
        return 0
    if not token:
        raise InputError(
            "the ADO backend needs the caller's OIDC token (the trusted pipeline verifies it): pass "
            "--oidc-token or set AUTHORIZATION"
        )
    creds = credentials(
        client_id=ado.client_id,
        client_secret=ado.client_secret,
        tenant_id=ado.tenant_id,
        pat=ado.pat,
        env=env,
    )
    creds.header()  # a principal that cannot get a token fails before any call
    # Proxies come from the environment (HTTPS_PROXY, NO_PROXY), as on self-hosted runners.
    try:
        http = httpx.Client(
            verify=tls_context(), timeout=httpx.Timeout(30.0, connect=10.0), trust_env=True
        )
    except (ImportError, ValueError) as exc:  # a SOCKS proxy (no socksio), an unknown scheme
        why = "SOCKS proxies are not supported" if isinstance(exc, ImportError) else str(exc)
        raise InputError(
            f"cannot use the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY): "
            f"{why}; give an http:// or https:// proxy URL"
        ) from None
    stop = stop or threading.Event()
    client = AdoClient(
        http=http, config=ado_config, credentials=creds, stop=stop, on_retry=reporter.warning
    )
    try:
        if ado.preview_yaml is not None:
            return _preview(client, params, token, ado.preview_yaml, reporter)
        if stop.is_set():
            raise AdoError(f"not triggering the ADO pipeline: stopped by {why_stopped()}")
        with reporter.step("trigger the ADO pipeline"):
            run = client.run_pipeline(params, token=token)
        link = run.web_url or client.runs_url
        reporter.info(f"ADO run {run.id}: {link}")

        follower = Follower(
            client,
            run,
            limits=Limits.from_config(ado_config),
            reporter=reporter,
            stop=stop,
            why_stopped=why_stopped,
            redact=lambda line: mask(line, secrets),
        )
        with reporter.step(f"ADO run {run.id}"):
            try:
                followed = follower.follow()
            except (AdoError, AdoAuthError) as exc:
                # Past the trigger, refused credentials are no longer bad input: the run exists.
                # It is cancelled if Azure DevOps still listens: nobody would see what it does.
                raise AdoError(f"{exc}; {_cancel_quietly(client, run.id, link)}") from None
    finally:
        creds.close()
        http.close()
    return _finish(followed, options=options, env=env, reporter=reporter, link=link)


def _cancel_quietly(client: AdoClient, run_id: int, link: str) -> str:
    """Cancel a run this client can no longer follow; say what became of it."""
    from image_builder.backends.ado import AdoAuthError, AdoError

    try:
        client.cancel(run_id)
    except (AdoError, AdoAuthError):
        return f"ADO run {run_id} may still be running: {link}"
    return f"ADO run {run_id} was asked to cancel: {link}"


def _preview(
    client: AdoClient, params: Mapping[str, str], token: str, path: Path, reporter: Reporter
) -> int:
    try:
        yaml_text = path.read_text()
    except OSError as exc:
        raise InputError(
            f"cannot read --ado-preview-run-yaml-path {path}: {exc.strerror}"
        ) from None
    preview = client.run_pipeline(params, token=token, preview_yaml=yaml_text)
    reporter.result(preview.final_yaml or "")
    if not preview.final_yaml:
        reporter.warning("the preview run returned no finalYaml")
    return 0


def _finish(
    followed: Followed,
    *,
    options: BuildOptions,
    env: Mapping[str, str],
    reporter: Reporter,
    link: str,
) -> int:
    """The report from the run's publish or sign step, the outputs, and the exit code."""
    from image_builder.ci_output import github_outputs, vso_variables
    from image_builder.report import parse_from_logs

    build = followed.build
    name = f"ADO run {build.id}"
    result = build.result or ("canceled" if followed.cancelled else "unknown")
    report: BuildReport | None
    try:
        report = parse_from_logs(followed.report_log)
    except RuntimeFailure as exc:
        report = None
        missing = str(exc)
    extra = {"adoResult": result}
    publish_report(
        report,
        report_path=options.build_report_path,
        env=env,
        reporter=reporter,
        extra_outputs=extra,
        link=link,
    )
    if report is not None and env.get("TF_BUILD") == "True":
        for line in vso_variables({**github_outputs(report), **extra}):
            reporter.result(line)
    if followed.cancelled:
        if followed.stopped:
            reporter.error(f"{name} was cancelled ({followed.cancelled}): {link}")
        else:
            reporter.error(
                f"asked Azure DevOps to cancel {name} ({followed.cancelled}), but it had not "
                f"stopped when image-builder gave up waiting; see {link}"
            )
        return 1
    if result != "succeeded":
        reporter.error(f"{name} finished with result {result}: {link}")
        return 1
    if report is None:
        reporter.error(f"{name} succeeded but {missing} of its publish and sign steps")
        return 1
    if report.status != "Succeeded":
        reporter.error(report.error or "the build in ADO failed")
        return 1
    return 0
