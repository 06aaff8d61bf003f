"""``image-builder build --backend ado``: the client half. It builds nothing; it validates the
request, triggers the trusted pipeline, follows it and brings back its report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from image_builder.commands.build import BuildOptions, publish
from image_builder.commands.inputs import load_inputs_for, resolve_tags
from image_builder.errors import InputError, RuntimeFailure
from image_builder.platforms import parse_platforms
from image_builder.reporter import Reporter
from image_builder.tags import decode_tags_base64


@dataclass(frozen=True, kw_only=True)
class AdoOptions:
    client_id: str | None = None
    client_secret: str | None = None
    tenant_id: str | None = None
    pat: str | None = None
    preview: bool = False
    preview_yaml: Path | None = None


def run_ado_build(
    options: BuildOptions,
    ado: AdoOptions,
    *,
    env: Mapping[str, str],
    reporter: Reporter,
    now: datetime,
) -> int:
    import httpx

    from image_builder.backends.ado import (
        AdoClient,
        AdoRequest,
        auth_header,
        follow,
        parameters_json,
        template_parameters,
        vso_variables,
    )
    from image_builder.commands.inputs import token_from
    from image_builder.http import tls_context
    from image_builder.plan import parse_build_args
    from image_builder.report import parse_from_logs

    if ado.preview != (ado.preview_yaml is not None):
        raise InputError(
            "--ado-preview-run and --ado-preview-run-yaml-path go together; give both or neither"
        )
    token = token_from(options.oidc_token, env)
    for secret in (
        token,
        ado.client_secret,
        ado.pat,
        env.get("AZURE_CLIENT_SECRET"),
        env.get("AZURE_DEVOPS_EXT_PAT"),
    ):
        reporter.mask(secret or "")
    inputs = load_inputs_for(options, env)
    config = inputs.config.ado_config
    if config is None:
        raise InputError(
            "--backend ado needs ado-config in config.yaml (organization, project, pipeline id)"
        )
    reporter = reporter.with_format(inputs.config.log_format)
    # Render the tags here too, so a broken template fails before the pipeline is triggered.
    resolve_tags(inputs, tags=options.tags, tag_base64=options.tag_base64, env=env, now=now)
    raw_tags = list(options.tags)
    if options.tag_base64:
        raw_tags += [f"{t.name}={t.template}" for t in decode_tags_base64(options.tag_base64)]
    build_args = tuple(f"{k}={v}" for k, v in parse_build_args(options.build_args, env))
    request = AdoRequest(
        name=options.name,
        context=options.context,
        dockerfile=options.dockerfile,
        tags=tuple(raw_tags),
        build_args=build_args,
        platforms=parse_platforms(options.platforms),
        target=options.target,
        export_tags=options.export_tags,
        env_file=options.env_file,
    )
    from image_builder.plan import validate_name

    validate_name(options.name)
    params = template_parameters(inputs.ctx, request)
    if not token:
        raise InputError(
            "the ADO backend needs the caller's OIDC token (the trusted pipeline verifies it): pass "
            "--oidc-token or set AUTHORIZATION"
        )
    if options.dry_run:
        reporter.result(parameters_json(params))
        return 0
    authorization = auth_header(
        client_id=ado.client_id,
        client_secret=ado.client_secret,
        tenant_id=ado.tenant_id,
        pat=ado.pat,
        env=env,
    )
    http = httpx.Client(verify=tls_context(), timeout=httpx.Timeout(30.0), trust_env=False)
    client = AdoClient(http=http, config=config, authorization=authorization)
    if ado.preview_yaml is not None:
        try:
            yaml_text = ado.preview_yaml.read_text()
        except OSError as exc:
            raise InputError(
                f"cannot read --ado-preview-run-yaml-path {ado.preview_yaml}: {exc.strerror}"
            ) from None
        preview = client.run_pipeline(params, token=token, preview_yaml=yaml_text)
        reporter.result(preview.final_yaml or "")
        if not preview.final_yaml:
            reporter.warning("the preview run returned no finalYaml")
        return 0

    with reporter.step("trigger the ADO pipeline"):
        run = client.run_pipeline(params, token=token)
        reporter.info(f"ADO run {run.id}: {run.web_url or 'no web link in the answer'}")
    with reporter.step(f"wait for ADO run {run.id}"):
        run = follow(
            client,
            run,
            refresh=config.ado_refresh_interval.total_seconds(),
            timeout=config.ado_timeout.total_seconds(),
            on_state=lambda r: reporter.info(
                f"ADO run {r.id}: {r.state}{' (' + r.result + ')' if r.result else ''}"
            ),
        )
    result = run.result or "unknown"
    with reporter.step(f"logs of ADO run {run.id}"):
        logs = client.logs(run.id)
        for line in logs.splitlines():
            reporter.stream(line.replace(token, "***") if token else line)
    try:
        report = parse_from_logs(logs)
    except RuntimeFailure as exc:
        report = None
        missing = str(exc)
    extra = {"adoResult": result}
    if report is not None:
        publish(
            report,
            options=options,
            env=env,
            reporter=reporter,
            extra_outputs=extra,
            link=run.web_url,
        )
        if env.get("TF_BUILD") == "True":
            from image_builder.ci_output import github_outputs

            for line in vso_variables({**github_outputs(report), **extra}):
                reporter.result(line)
    else:
        publish(
            None, options=options, env=env, reporter=reporter, extra_outputs=extra, link=run.web_url
        )
    if result != "succeeded":
        reporter.error(
            f"ADO run {run.id} finished with result {result}: {run.web_url or ''}".strip()
        )
        return 1
    if report is None:
        reporter.error(f"ADO run {run.id} succeeded but {missing}")
        return 1
    if report.status != "Succeeded":
        reporter.error(report.error or "the build in ADO failed")
        return 1
    return 0
