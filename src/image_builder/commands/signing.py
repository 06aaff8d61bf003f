"""``sign`` (sign-only), ``verify``, ``keygen``, ``signify cert-status|rotate`` and
``verify-token``."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from image_builder.commands.inputs import token_from
from image_builder.config import Config, NotarySignerConfig, load_config
from image_builder.errors import InputError, RuntimeFailure
from image_builder.oci import Reference, parse_reference
from image_builder.report import BuildReport
from image_builder.reporter import Reporter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

    from image_builder.provenance import Provenance
    from image_builder.registry import RegistryClient
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
    ado_state_output: bool = False  # the Go tool's signing_success output variable


def run_sign(options: SignOptions, *, env: Mapping[str, str], reporter: Reporter, euid: int) -> int:
    """Resolve each reference to its digest once, then sign that digest with every signer that
    runs for this repository and job type."""
    if not options.ado_state_output:
        return _sign(options, env=env, reporter=reporter, euid=euid)
    from image_builder.ci_output import signing_success

    code = 1
    try:
        code = _sign(options, env=env, reporter=reporter, euid=euid)
    finally:
        reporter.result(signing_success(code == 0))
    return code


def _sign(options: SignOptions, *, env: Mapping[str, str], reporter: Reporter, euid: int) -> int:
    from image_builder.commands.shared import consume_token, registry_client
    from image_builder.context import detect_ci_context
    from image_builder.signing import select_signers, sign_targets
    from image_builder.signing.factory import make_signers, provenance
    from image_builder.trust import verify_caller

    if bool(options.images) == (options.from_report is not None):
        raise InputError(
            "name what to sign: --images-to-sign with at least one reference, or --from-report "
            "with a build report (not both)"
        )
    reporter.mask(token_from(options.oidc_token, env) or "")
    config = load_config(options.config)
    ctx = detect_ci_context(env, Path("."))
    report = _published_report(options.from_report) if options.from_report else None
    texts = report.images_list + report.stored_in if report is not None else options.images
    refs = [parse_reference(text) for text in texts]
    claims = None
    if config.trust:
        names = [_image_name(ref, config) for ref in refs]
        claims = verify_caller(
            config.trust,
            ctx,
            token_from(options.oidc_token, env),
            repo_flag=options.repo,
            env=env,
            names=names,
        )
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
        from image_builder.provenance import builder_id, identity, mismatch

        if report.provenance is not None:
            digests = [report.digest, *(m.digest for m in report.manifests)]
            who = identity(ctx, claims) if claims is not None else None
            builder = builder_id(config.provenance.builder_id, env)
            problem = mismatch(report.provenance, digests=digests, who=who, builder_id=builder)
            if problem is not None:
                raise InputError(
                    f"--from-report {options.from_report}: its provenance {problem}; sign the "
                    "report of this build's own publish stage"
                )
        elif config.provenance.enabled and ctx.is_release and _attests(config, running):
            reporter.warning(
                f"--from-report {options.from_report} carries no provenance statement (made "
                "by a publish stage that attaches none, or an older one): the images are "
                "signed without provenance"
            )

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


def _attests(config: Config, running: list[str]) -> bool:
    kinds = {s.name: s.type for s in config.sign_config.signers}
    return any(kinds.get(name) == "cosign" for name in running)


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


@dataclass(frozen=True, kw_only=True)
class ProvenanceExpectations:
    """What ``verify --provenance`` requires of the statement, beyond its signature."""

    source_repo: str | None = None
    ref: str | None = None
    builder_id: str | None = None
    workflow: str | None = None

    def problems(self, found: Provenance) -> list[str]:
        out = []
        pins = (self.source_repo, self.ref, self.workflow)
        if any(p is not None for p in pins) and not found.identity_from_token:
            # A builder without a trust policy records what its CI context says; only a token
            # makes the source, ref and workflow something to pin.
            out.append(
                "its source, ref and workflow were not taken from a verified token (the builder "
                "has no trust policy), so --source-repo, --ref and --workflow cannot hold"
            )
        if self.builder_id is not None and found.builder_id != self.builder_id:
            out.append(f"built by {found.builder_id}, not {self.builder_id}")
        if self.source_repo is not None and not _same_repository(
            found.repository, self.source_repo
        ):
            out.append(f"built from {found.repository}, not {self.source_repo}")
        if self.ref is not None and found.ref not in _refs(self.ref):
            out.append(f"built from the ref {found.ref}, not {self.ref}")
        if self.workflow is not None and not _same_workflow(found.workflow, self.workflow):
            out.append(f"asked for by the workflow {found.workflow}, not {self.workflow}")
        return out


def _same_repository(recorded: str | None, wanted: str) -> bool:
    """``org/repo`` means the repository on github.com; a URL names its server."""
    if recorded is None:
        return False
    if "://" not in wanted:
        wanted = f"https://github.com/{wanted}"
    return recorded.lower().rstrip("/").removesuffix(".git") == wanted.lower().rstrip(
        "/"
    ).removesuffix(".git")


def _refs(wanted: str) -> tuple[str, ...]:
    if wanted.startswith("refs/"):
        return (wanted,)
    return (f"refs/heads/{wanted}", f"refs/tags/{wanted}")


def _same_workflow(recorded: str | None, wanted: str) -> bool:
    if recorded is None:
        return False
    return recorded == wanted or ("@" not in wanted and recorded.split("@", 1)[0] == wanted)


@dataclass(frozen=True, kw_only=True)
class _Checked:
    digest: str
    signature: str | None  # the problem, None: verified
    provenance: str | None  # the problem, None: verified (or not asked for)
    signatures: int = 0
    found: Provenance | None = None

    @property
    def problems(self) -> str:
        said = (self.signature, self.provenance and f"provenance: {self.provenance}")
        return "; ".join(p for p in said if p)


@dataclass(frozen=True, kw_only=True)
class VerifyOptions:
    image: str
    key: Path  # the PEM public key
    config: Path | None = None  # for insecure-registries
    expect: ProvenanceExpectations | None = None  # --provenance, with its pins
    as_json: bool = False


def run_verify(options: VerifyOptions, *, env: Mapping[str, str], reporter: Reporter) -> int:
    """Check the signature of the image and of each platform manifest; with ``expect`` (from
    ``--provenance``) also a provenance statement at each, signed by the same key, whose subjects
    include the image and that meets ``expect``."""
    from image_builder.commands.shared import registry_client
    from image_builder.signing.cosign import verify_digest
    from image_builder.signing.keys import load_public_key

    key, expect, as_json = options.key, options.expect, options.as_json
    public = load_public_key(key)
    ref = parse_reference(options.image)
    registry = registry_client(load_config(options.config), env)
    digest = ref.digest or registry.manifest_digest(ref)
    if digest is None:
        raise RuntimeFailure(f"{ref} does not exist")
    manifest = registry.get_manifest(ref.with_digest(digest))
    digests = [digest, *(entry.digest for entry in manifest.entries(registry.max_entries))]
    checked = []
    for each in digests:
        signature = verify_digest(registry, ref, each, public)
        problem, found = None, None
        if expect is not None:
            problem, found = _provenance_at(registry, ref, each, digest, public, expect)
        checked.append(
            _Checked(
                digest=each,
                signature=None if signature.ok else signature.problem,
                provenance=problem,
                signatures=signature.signatures,
                found=found,
            )
        )
    kind = "index" if manifest.is_index else "image"
    failed = [c for c in checked if c.signature or c.provenance]
    if expect is None and not as_json:
        reporter.result(json.dumps([_signature_json(c) for c in checked]))
    elif as_json:
        asked = expect is not None
        reporter.result(json.dumps(_verify_json(ref.name, digest, checked, asked=asked)))
    else:
        for line in _human(ref.name, digest, checked, key):
            reporter.result(line)
    if failed:
        problems = {c.problems for c in failed}
        details = "; ".join(
            f"{'the ' + kind if c.digest == digest else 'platform manifest'} {c.digest}: "
            f"{c.problems}"
            for c in failed
        )
        if expect is not None and len(failed) > 1 and len(problems) == 1:  # say it once
            every = "all" if len(failed) == len(checked) else f"{len(failed)} of"
            details = f"{every} {len(checked)} manifests: {problems.pop()}"
        reporter.error(f"{ref.name}@{digest} does not verify with {key}: {details}")
        return 1
    what = ": signature and provenance" if expect is not None else ""
    reporter.info(f"{ref.name}@{digest}: {len(checked)} manifest(s){what} verified with {key}")
    return 0


def _provenance_at(
    registry: RegistryClient,
    ref: Reference,
    digest: str,
    image: str,
    key: EllipticCurvePublicKey,
    expect: ProvenanceExpectations,
) -> tuple[str | None, Provenance | None]:
    """A verified statement at ``digest`` that names ``image`` too and meets ``expect``; else the
    most specific reason there is none."""
    from image_builder.provenance import BUILD_TYPE
    from image_builder.signing.attest import read_attestations

    found = read_attestations(registry, ref, digest, key)
    if not found.verified:
        return found.problem, None
    problems = []
    for statement in found.verified:
        if statement.build_type != BUILD_TYPE:
            problems.append(f"a statement of another build type ({statement.build_type})")
            continue
        if image not in statement.subjects:
            problems.append(
                f"a statement for other subjects ({', '.join(statement.subjects)}), not {image}"
            )
            continue
        if not statement.with_image(ref.name):
            problems.append(f"a statement about the image {statement.image}, not {ref.name}")
            continue
        unmet = expect.problems(statement)
        if not unmet:
            return None, statement
        problems.append("; ".join(unmet))
    return problems[0], None


def _signature_json(c: _Checked) -> dict[str, object]:
    return {
        "digest": c.digest,
        "verified": c.signature is None,
        "signatures": c.signatures,
        "problem": c.signature,
    }


def _verify_json(
    name: str, digest: str, checked: list[_Checked], *, asked: bool
) -> dict[str, object]:
    top = next((c.found for c in checked if c.digest == digest and c.found), None)
    return {
        "image": f"{name}@{digest}",
        "verified": not any(c.signature or c.provenance for c in checked),
        "manifests": [
            {
                "digest": c.digest,
                "signature": {"verified": c.signature is None, "problem": c.signature},
                "provenance": None
                if not asked
                else {"verified": c.provenance is None, "problem": c.provenance},
            }
            for c in checked
        ],
        "provenance": top.to_json() if top else None,
    }


def _human(name: str, digest: str, checked: list[_Checked], key: Path) -> list[str]:
    ok = not any(c.signature or c.provenance for c in checked)
    lines = [
        f"{name}@{digest}: {'verified' if ok else 'NOT verified'} with {key} "
        f"({len(checked)} manifest(s): signature and provenance)"
    ]
    top = next((c.found for c in checked if c.digest == digest and c.found), None)
    if top is not None:
        lines += [
            f"  builder    {top.builder_id}",
            f"  source     {top.repository or '-'} @ {top.commit or '-'} ({top.ref or '-'}, "
            f"{top.event or '-'})",
            f"  workflow   {top.workflow or '-'}",
            "  identity   "
            + (
                "source, ref and workflow from a verified token"
                if top.identity_from_token
                else "from the builder's CI context (no token verified)"
            ),
            f"  run        {top.invocation_id or '-'} ({top.started or '?'} to "
            f"{top.finished or '?'})",
            *(f"  base       {base}" for base in top.bases),
        ]
    for c in checked:
        if c.signature or c.provenance:
            lines.append(f"  FAILED     {c.digest}: {c.signature or c.provenance}")
    return lines


# --- keygen -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class KeygenOptions:
    prefix: Path  # writes <prefix>.key and <prefix>.pub
    password_env: str  # the variable that holds the new key's password


def run_keygen(options: KeygenOptions, *, env: Mapping[str, str], reporter: Reporter) -> int:
    from image_builder.signing.keys import generate_key_pair

    prefix, password_env = options.prefix, options.password_env
    if password_env not in env:
        raise InputError(
            f"{password_env} is not set; export the new key's password in it (an empty value "
            "makes an unencrypted-equivalent key) or name another variable with --password-env"
        )
    key_path, pub_path = generate_key_pair(prefix, env[password_env].encode())
    reporter.result(json.dumps({"private_key": str(key_path), "public_key": str(pub_path)}))
    return 0


# --- signify certificate lifecycle ---------------------------------------------------------------


def notary_signer(config: Config, name: str | None) -> NotarySignerConfig:
    notaries = [s for s in config.sign_config.signers if isinstance(s, NotarySignerConfig)]
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


@dataclass(frozen=True, kw_only=True)
class CertStatusOptions:
    config: Path | None = None
    signer: str | None = None  # which notary signer, when the config has several
    warn: timedelta = timedelta(days=2)  # fail this close to expiry


def run_cert_status(options: CertStatusOptions, *, now: datetime, reporter: Reporter) -> int:
    from image_builder.signing.notary import cert_status, read_secret

    warn = options.warn
    chosen = notary_signer(load_config(options.config), options.signer)
    status = cert_status(read_secret(Path(chosen.config.secret.path)), now)
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


@dataclass(frozen=True, kw_only=True)
class RotateOptions:
    config: Path | None = None
    signer: str | None = None  # which notary signer, when the config has several


def run_rotate(options: RotateOptions, *, now: datetime, reporter: Reporter) -> int:
    from image_builder.signing.notary import rotate

    chosen = notary_signer(load_config(options.config), options.signer)
    status, backup = rotate(chosen.config, now)
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


@dataclass(frozen=True, kw_only=True)
class VerifyTokenOptions:
    config: Path | None
    token: str | None = None  # else AUTHORIZATION
    name: str | None = None  # also check that the token may build and sign this image name
    ado_outputs: bool = False  # the trusted pipeline's verified job variables


def run_verify_token(
    options: VerifyTokenOptions, *, env: Mapping[str, str], reporter: Reporter
) -> int:
    """Check a token against the config's trust policy and print the claims that matter. The
    token is not spent: the stages that build and sign spend it."""
    from image_builder.errors import TrustError
    from image_builder.trust import check_image_name, make_verifier

    token = token_from(options.token, env)
    reporter.mask(token or "")
    if token is None:
        raise TrustError("no token: pass it with --token or the AUTHORIZATION variable")
    config = load_config(options.config)
    if not config.trust:
        raise InputError("the config has no trust section; add the trusted issuers to config.yaml")
    claims = make_verifier(config.trust).verify(token)
    if options.name is not None:
        check_image_name(claims, options.name)
    reporter.result(claims.to_json())
    if options.ado_outputs:
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
    from image_builder.ci_output import vso_variables
    from image_builder.context import azure
    from image_builder.trust import check_caller

    ctx = azure.load(env)
    check_caller(config.trust, claims, ctx, repo_flag=None, env=env)
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
    return vso_variables(values)
