"""``sign`` (sign-only), ``verify``, ``keygen`` and ``signify cert-status|rotate``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.config import Config, SignerConfig, load_config
from image_builder.errors import InputError, RuntimeFailure
from image_builder.oci import Reference, parse_reference
from image_builder.report import BuildReport
from image_builder.reporter import Reporter

if TYPE_CHECKING:
    from image_builder.trust import VerifiedClaims


# --- sign-only ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SignOptions:
    images: tuple[str, ...] = ()
    config: Path | None = None
    repo: str | None = None
    oidc_token: str | None = None
    from_report: Path | None = None  # sign what a publishing job's build report lists
    build_report_path: Path | None = None


def run_sign(options: SignOptions, *, env: Mapping[str, str], reporter: Reporter, euid: int) -> int:
    """Resolve each reference to its digest once, then sign that digest with every signer that
    runs for this repository and job type."""
    from image_builder.context import detect_ci_context
    from image_builder.signing import select_signers, sign_targets
    from image_builder.signing.factory import make_signers, provenance

    if bool(options.images) == (options.from_report is not None):
        raise InputError(
            "name what to sign: --images-to-sign with at least one reference, or --from-report "
            "with a build report (not both)"
        )
    from image_builder.commands.inputs import token_from

    reporter.mask(token_from(options.oidc_token, env) or "")
    config = load_config(options.config)
    ctx = detect_ci_context(env, Path("."))
    report = _published_report(options.from_report) if options.from_report else None
    texts = report.images_list + report.stored_in if report is not None else options.images
    refs = [parse_reference(text) for text in texts]
    if config.trust:
        from image_builder.commands.build import consume_token, verify_caller

        names = [_image_name(ref, config) for ref in refs]
        claims = verify_caller(config, ctx, options.oidc_token, options.repo, env, names=names)
        if not claims.signing_allowed:
            raise InputError(f"signing refused by the trust policy: {claims.signing_reason}")
        consume_token(config, claims, ("sign",), env, euid)
    repository = options.repo or ctx.repository
    choices = select_signers(config, ctx, repository)
    running = [c.name for c in choices if c.runs]
    if not running:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in choices) or "no signers are configured"
        raise InputError(
            f"no signer runs for {repository or 'this repository'} ({ctx.job_type}): {reasons}"
        )
    from image_builder.commands.build import registry_client

    registry = registry_client(config, env)
    signers = make_signers(
        config,
        running,
        registry=registry,
        env=env,
        optional=provenance(repository, ctx.ref, ctx.commit_sha),
        on_retry=reporter.warning,
    )
    if report is not None and report.digest is not None:
        from image_builder.backends.local import sign_all

        report = sign_all(running, report, registry, signers.__getitem__)
        reporter.result(report.block())
        if options.build_report_path is not None:
            report.write(options.build_report_path)
        if report.status != "Succeeded":
            reporter.error(report.error or "signing failed")
            return 1
        return 0
    pushed = []
    for ref in refs:
        digest = ref.digest or registry.manifest_digest(ref)
        if digest is None:
            raise RuntimeFailure(f"{ref} does not exist; nothing to sign")
        pushed.append((ref, digest))
        reporter.info(f"{ref} is {digest}; signing that digest")
    targets = sign_targets(registry, pushed)
    errors = []
    signed_by = []
    for name in running:
        try:
            signers[name].sign(targets)
            signed_by.append(name)
        except (InputError, RuntimeFailure) as exc:
            errors.append(f"signer {name} failed on {', '.join(str(r) for r, _ in pushed)}: {exc}")
    reporter.result(
        json.dumps(
            {
                "signed": not errors,
                "images": [f"{r}@{d}" for r, d in pushed],
                "signed_by": signed_by,
                "errors": errors,
            }
        )
    )
    if errors:
        reporter.error("; ".join(errors))
        return 1
    return 0


def _image_name(ref: Reference, config: Config) -> str:
    """The image name of ``ref`` under one of the config's release registries; a trusted signer
    signs nothing else."""
    from image_builder.plan import in_dev_registry

    dev = in_dev_registry(config, ref.name)
    if dev is not None:
        raise InputError(f"{ref} is in the dev registry {dev}; images there are never signed")
    for registry in sorted(config.registry, key=len, reverse=True):
        prefix = registry + "/"
        if ref.name.startswith(prefix):
            return ref.name.removeprefix(prefix)
    raise InputError(
        f"{ref} is not in a release registry of this config ({', '.join(config.registry)}); "
        "only images built here are signed here"
    )


def _published_report(path: Path) -> BuildReport:
    """A build report of a publishing job: it must say that every reference holds one digest."""
    try:
        report = BuildReport.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read --from-report {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise InputError(f"--from-report {path} is not a build report: {exc}") from None
    # A build stopped before signing (status Cancelled) pushed everything: it may be signed.
    if report.status not in ("Succeeded", "Cancelled") or not report.pushed or not report.digest:
        raise InputError(
            f"--from-report {path} reports a build that did not push (status {report.status}); "
            "nothing to sign"
        )
    if not report.images_list and not report.stored_in:
        raise InputError(f"--from-report {path} lists no pushed image")
    return report


# --- verify -------------------------------------------------------------------------------------


def run_verify(
    image: str, key: Path, *, config_path: Path | None, env: Mapping[str, str], reporter: Reporter
) -> int:
    from image_builder.signing.cosign import verify_digest
    from image_builder.signing.keys import load_public_key

    public = load_public_key(key)
    ref = parse_reference(image)
    from image_builder.commands.build import registry_client

    registry = registry_client(load_config(config_path), env)
    digest = ref.digest or registry.manifest_digest(ref)
    if digest is None:
        raise RuntimeFailure(f"{ref} does not exist")
    manifest = registry.get_manifest(ref.with_digest(digest))
    digests = [digest, *(child for child, _, _ in manifest.children(registry.max_entries))]
    checks = [verify_digest(registry, ref, d, public) for d in digests]
    reporter.result(
        json.dumps(
            [
                {
                    "digest": c.digest,
                    "verified": c.ok,
                    "signatures": c.signatures,
                    "problem": c.problem,
                }
                for c in checks
            ]
        )
    )
    failed = [c for c in checks if not c.ok]
    if failed:
        kind = "index" if manifest.is_index else "image"
        details = "; ".join(
            f"{'the ' + kind if c.digest == digest else 'platform manifest'} {c.digest}: {c.problem}"
            for c in failed
        )
        reporter.error(f"{ref.name}@{digest} does not verify with {key}: {details}")
        return 1
    reporter.info(f"{ref.name}@{digest}: {len(checks)} manifest(s) verified with {key}")
    return 0


# --- keygen -------------------------------------------------------------------------------------


def run_keygen(
    prefix: Path, password_env: str, *, env: Mapping[str, str], reporter: Reporter
) -> int:
    from image_builder.signing.keys import generate_key_pair

    if password_env not in env:
        raise InputError(
            f"{password_env} is not set; export the new key's password in it (an empty value "
            "makes an unencrypted-equivalent key) or name another variable with --password-env"
        )
    key_path, pub_path = generate_key_pair(prefix, env[password_env].encode())
    reporter.result(json.dumps({"private_key": str(key_path), "public_key": str(pub_path)}))
    return 0


# --- signify certificate lifecycle ---------------------------------------------------------------


def notary_signer(config: Config, name: str | None) -> SignerConfig:
    notaries = [s for s in config.sign_config.signers if s.type == "notary"]
    if name is not None:
        chosen = [s for s in notaries if s.name == name]
        if not chosen:
            known = ", ".join(s.name for s in notaries) or "none"
            raise InputError(
                f"no notary signer named {name!r} in the config (notary signers: {known})"
            )
        return chosen[0]
    if len(notaries) != 1:
        known = ", ".join(s.name for s in notaries) or "none"
        raise InputError(f"choose the notary signer with --signer (notary signers: {known})")
    return notaries[0]


def run_cert_status(
    config_path: Path | None,
    signer: str | None,
    warn: timedelta,
    *,
    now: datetime,
    reporter: Reporter,
) -> int:
    from image_builder.signing.notary import cert_status, read_secret

    chosen = notary_signer(load_config(config_path), signer)
    status = cert_status(read_secret(Path(chosen.notary().secret.path)), now)
    reporter.result(
        json.dumps(
            {
                "signer": chosen.name,
                "subject": status.subject,
                "not_after": status.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "remaining_hours": round(status.remaining.total_seconds() / 3600, 1),
            }
        )
    )
    if status.expired:
        reporter.error(
            f"the Signify certificate of {chosen.name} has expired; it cannot be rotated, get a new one issued"
        )
        return 1
    if status.remaining <= warn:
        reporter.error(
            f"the Signify certificate of {chosen.name} expires within {warn.days} day(s); run "
            "`image-builder signify rotate`"
        )
        return 1
    return 0


def run_rotate(
    config_path: Path | None, signer: str | None, *, now: datetime, reporter: Reporter
) -> int:
    from image_builder.signing.notary import rotate

    chosen = notary_signer(load_config(config_path), signer)
    status, backup = rotate(chosen.notary(), now)
    reporter.result(
        json.dumps(
            {
                "signer": chosen.name,
                "subject": status.subject,
                "not_after": status.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "previous_secret": str(backup) if backup else None,
            }
        )
    )
    return 0


# --- verify-token -------------------------------------------------------------------------------


def run_verify_token(
    token_flag: str | None,
    config_path: Path | None,
    *,
    env: Mapping[str, str],
    reporter: Reporter,
    ado_outputs: bool = False,
    name: str | None = None,
) -> int:
    """Check a token against the config's trust policy and print the claims that matter. The
    token is not spent: the stages that build and sign spend it."""
    from image_builder.commands.inputs import token_from
    from image_builder.trust import TrustError, check_image_name, make_verifier

    token = token_from(token_flag, env)
    reporter.mask(token or "")
    if token is None:
        raise TrustError("no token: pass it with --token or the AUTHORIZATION variable")
    config = load_config(config_path)
    if not config.trust:
        raise InputError("the config has no trust section; add the trusted issuers to config.yaml")
    claims = make_verifier(config.trust).verify(token)
    if name is not None:
        check_image_name(claims, name)
    reporter.result(claims.to_json())
    if ado_outputs:
        for line in verified_job_variables(claims, env, config):
            reporter.result(line)
    return 0


_SAFE_VALUE = re.compile(r"[A-Za-z0-9._/@+-]*")


def verified_job_variables(
    claims: VerifiedClaims, env: Mapping[str, str], config: Config
) -> list[str]:
    """Azure DevOps output variables for the later jobs of the trusted pipeline: what they build
    and whether it may be signed, taken from the verified token wherever the token says it. Only a
    pull request's number and head commit come from the caller (a token does not carry them);
    such builds go to the dev registry, unsigned."""
    from image_builder.backends.ado import vso_variables
    from image_builder.context import azure
    from image_builder.github_api import check_pull_request
    from image_builder.trust import check_context

    ctx = azure.load(env)
    check_context(claims, ctx, None)
    check_pull_request(config.trust, claims, ctx, env)
    owner, _, name = claims.repository.partition("/")
    release = ctx.is_release
    commit = claims.sha if release and claims.sha else ctx.commit_sha
    values = {
        "REPO_OWNER": owner,
        "REPO_NAME": name,
        "JOB_TYPE": ctx.job_type,
        "COMMIT": commit or "",
        "PULL_BASE_SHA": commit if release and commit else ctx.base_sha or "",
        "PULL_PULL_SHA": "" if release else ctx.head_sha or "",
        "PULL_NUMBER": "" if ctx.pr_number is None else str(ctx.pr_number),
        "BASE_REF": (claims.ref if release else ctx.base_ref) or "",
        "SIGN": "true" if release and claims.signing_allowed else "false",
    }
    for name, value in values.items():
        if not _SAFE_VALUE.fullmatch(value):
            raise InputError(
                f"{name} {value!r} is not a git ref: use letters, digits and . _ / @ + -"
                if name == "BASE_REF"
                else f"{name} {value!r} holds characters it never may; check the run's parameters"
            )
    return list(vso_variables(values))
