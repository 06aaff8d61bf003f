"""``image-builder build``: plan, build with buildah, push to every reference, report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.commands.inputs import load_inputs_for, resolve_tags
from image_builder.config import Config
from image_builder.context import CIContext
from image_builder.envfile import effective
from image_builder.errors import InputError
from image_builder.plan import BuildPlan, make_plan, parse_build_args
from image_builder.platforms import parse_platforms
from image_builder.report import BuildReport
from image_builder.reporter import Reporter

if TYPE_CHECKING:
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
    platforms: tuple[str, ...] = ()
    target: str | None = None
    export_tags: bool = False
    repo: str | None = None
    oidc_token: str | None = None
    dry_run: bool = False
    no_push: bool = False
    build_report_path: Path | None = None


def prepare(
    options: BuildOptions,
    *,
    env: Mapping[str, str],
    now: datetime,
    host_platform: str,
) -> tuple[BuildPlan, Config]:
    """The plan and the config it came from. Reads files and runs nothing, except git for the
    commit time of reproducible builds."""
    inputs = load_inputs_for(options, env)
    signing_block = None
    if inputs.config.trust:
        claims = verify_caller(inputs.config, inputs.ctx, options.oidc_token, options.repo, env)
        if not claims.signing_allowed:
            signing_block = claims.signing_reason
    if not inputs.dockerfile.is_file():
        raise InputError(
            f"Dockerfile {options.dockerfile!r} does not exist in the build context {inputs.root}; "
            "--dockerfile is relative to --context"
        )
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
    plan = make_plan(
        config=inputs.config,
        ctx=inputs.ctx,
        tags=tags,
        name=options.name,
        context_dir=inputs.root,
        dockerfile=inputs.dockerfile,
        platforms=platforms,
        build_args=parse_build_args(options.build_args, env),
        env_file_args=effective(env, inputs.env_file),
        export_tags=options.export_tags,
        target=options.target,
        push=not options.no_push,
        now=now,
        commit_time=commit_time,
        repo_override=options.repo,
        signing_block=signing_block,
    )
    return plan, inputs.config


def verify_caller(
    config: Config, ctx: CIContext, flag: str | None, repo_flag: str | None, env: Mapping[str, str]
) -> VerifiedClaims:
    """With a trust policy configured, nothing happens before the caller's token is verified and
    agrees with the CI context and the flags."""
    from image_builder.commands.inputs import token_from
    from image_builder.trust import TrustError, check_context, make_verifier

    token = token_from(flag, env)
    if token is None:
        raise TrustError(
            "this config has a trust policy: pass the caller's OIDC token with --oidc-token or the "
            "AUTHORIZATION variable"
        )
    claims = make_verifier(config.trust).verify(token)
    check_context(claims, ctx, repo_flag)
    return claims


def run_build(
    options: BuildOptions,
    *,
    env: Mapping[str, str],
    reporter: Reporter,
    now: datetime,
    host_platform: str,
) -> int:
    from image_builder.commands.inputs import token_from

    reporter.mask(token_from(options.oidc_token, env) or "")
    plan, config = prepare(options, env=env, now=now, host_platform=host_platform)
    reporter = reporter.with_format(config.log_format)
    if options.dry_run:
        reporter.result(json.dumps(plan.to_json(), indent=2))
        return 0

    from image_builder.backends.local import execute
    from image_builder.engines.buildah import BuildahEngine
    from image_builder.plan import plain_http_registries, registry_host
    from image_builder.registry import make_client
    from image_builder.signing.factory import make_signers, provenance

    plain = {registry_host(r) for r in plain_http_registries(plan.registries, config)}
    registry = make_client(env, plain_http=lambda host: host in plain)
    signers = make_signers(
        config,
        plan.running_signers,
        registry=registry,
        env=env,
        optional=provenance(plan.repository, plan.ref, plan.commit_sha),
        on_retry=reporter.warning,
    )
    engine = BuildahEngine(
        env=env,
        host_platform=host_platform,
        storage_driver=config.storage_driver,
        on_line=reporter.stream,
    )
    report = execute(plan, engine, reporter, registry=registry, signers=signers.__getitem__)
    publish(report, options=options, env=env, reporter=reporter)
    if report.status != "Succeeded":
        reporter.error(report.error or "the build failed")
        return 1
    for image in report.images_list:
        reporter.info(f"pushed {image}@{report.digest}")
    return 0


def publish(
    report: BuildReport | None,
    *,
    options: BuildOptions,
    env: Mapping[str, str],
    reporter: Reporter,
    extra_outputs: Mapping[str, str] | None = None,
    link: str | None = None,
) -> None:
    """The report on stdout between its markers, in the report file, and as CI outputs.
    ``extra_outputs`` (e.g. ``adoResult``) go to GitHub outputs even when there is no report."""
    from image_builder import ci_output

    values: dict[str, str] = {}
    if report is not None:
        reporter.result(report.block())
        if options.build_report_path is not None:
            report.write(options.build_report_path)
        values.update(ci_output.github_outputs(report))
    values.update(extra_outputs or {})
    if env.get("GITHUB_OUTPUT") and values:
        ci_output.append(Path(env["GITHUB_OUTPUT"]), ci_output.format_outputs(values))
    if env.get("GITHUB_STEP_SUMMARY") and (report is not None or link):
        ci_output.append(
            Path(env["GITHUB_STEP_SUMMARY"]), ci_output.step_summary(report, link=link)
        )
