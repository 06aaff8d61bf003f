"""The local backend: build once, publish content first and tags second (see
:mod:`image_builder.publish`), report exactly what landed, sign. This is also what runs inside
the trusted CI backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from image_builder import proc
from image_builder.context.model import Identity
from image_builder.dockerfile import DockerfileSyntaxError
from image_builder.engines import BuiltImage, Engine
from image_builder.errors import ImageBuilderError
from image_builder.events import rule
from image_builder.http import Deadline
from image_builder.oci import Destination, Reference, is_loopback, parse_reference
from image_builder.plan import BuildPlan
from image_builder.provenance import BaseImage, Subject
from image_builder.publish import Publication, Publisher, TagResult, publish
from image_builder.registry import PushRefused, RegistryClient, Unreachable
from image_builder.report import (
    AttestationRef,
    BuildReport,
    FailedImage,
    PlatformDigest,
    SignerInfo,
    SigningError,
    SupersededImage,
)
from image_builder.reporter import Reporter
from image_builder.signing import Attester, Signer, SignTarget, sign_targets
from image_builder.tags import tag_values

SignerFactory = Callable[[str], Signer]
_RESOLVE_SECONDS = 120.0  # for every base image together


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class ProvenanceInputs:
    """What the provenance of a build says beyond the plan: who asked (from the verified token on
    the trusted side), which builder and run this is, and the Dockerfile text whose base images
    the trusted side resolves."""

    who: Identity
    builder_id: str
    invocation_id: str
    version: str
    dockerfile_text: str
    dockerfile: str  # as given, relative to the context
    context: str  # as given, relative to the checkout
    host_platform: str
    withheld: frozenset[str] = frozenset()  # build arguments whose values stay out
    env_file: str | None = None  # as given, relative to the Dockerfile's folder
    # Reads the base images: without credentials, as the sandbox pulls them. None: the client
    # that publishes.
    resolver: RegistryClient | None = None
    clock: Callable[[], datetime] = field(default=_now)


def execute(
    plan: BuildPlan,
    engine: Engine,
    publisher: Publisher,
    reporter: Reporter,
    *,
    registry: RegistryClient,
    signers: SignerFactory | None = None,
    sign: bool = True,
    atomic: bool = True,
    publish_timeout: float = 180.0,
    provenance: ProvenanceInputs | None = None,
) -> BuildReport:
    """Run ``plan``; never raises for build, push or signing failures: they end up in the report.

    Signing happens only when every repository holds the image and every tag was written, and
    signs that digest; without ``sign`` it is left to a later ``sign --from-report``. After
    SIGTERM or SIGINT (see :mod:`image_builder.proc`) the report says Cancelled and names what
    was done before.

    A build that pushes first checks every registry (reachable, and letting the credentials
    push): one that refuses stops it before anything is built, in seconds, unless publish-mode
    is best-effort and another registry is fine. A Dockerfile the engine cannot read is bad
    input (:class:`DockerfileSyntaxError`, raised), not a failed build.

    With ``provenance`` (and a plan that attaches it), the base images are resolved before the
    build, and the statement for the pushed digests joins the report after the push; signers
    that can attest sign and store it after they sign the image."""
    image: BuiltImage | None = None
    try:
        refused = check_registries(plan, registry, reporter) if plan.push else {}
        if refused and (atomic or len(refused) == len(plan.destinations)):
            return _refused_report(plan, refused)
        started, bases = None, None
        if provenance and plan.provenance and plan.provenance.runs and plan.push:
            started = provenance.clock()
            bases = _resolve_bases(plan, provenance, registry, reporter)
        try:
            with reporter.step(f"build {plan.name} for {', '.join(plan.platforms)}"):
                image = engine.build(plan)
        except DockerfileSyntaxError:
            raise  # bad input (exit 2), not a failed build
        except ImageBuilderError as exc:
            return _report(plan, None, error=f"build failed: {exc}")
        if not plan.push:
            references = tuple(str(r) for r in plan.references)
            try:
                engine.tag(image, references)
            except ImageBuilderError as exc:
                return _report(plan, None, error=f"--no-push: keeping the image failed: {exc}")
            reporter.info(
                "--no-push: nothing was pushed; the image is in local storage as "
                + ", ".join(references)
            )
            return _report(plan, None, built_only=True)
        deadline = Deadline(publish_timeout)
        with (
            reporter.step(
                f"publish to {len(plan.destinations)} repository(ies), {len(plan.references)} tag(s)"
            ),
            registry.bounded(deadline),
        ):
            done = publish(
                image,
                plan.destinations,
                publisher,
                registry,
                atomic=atomic,
                deadline=deadline,
                progress=reporter.info,
                skip=refused,
            )
        report = _report(plan, done, atomic=atomic)
        if provenance and bases is not None and started and report.pushed and done.digest:
            report = _with_provenance(plan, report, provenance, bases, started, registry)
            if plan.provenance is not None and not plan.provenance.signed_by:
                report = _attach_unsigned(report, registry)
        if sign and report.pushed and done.digest and plan.running_signers:
            if signers is None:
                raise ValueError("signers are planned but no signer factory was given")
            if proc.CHILDREN.stopping:
                return _cancelled(report, "before signing")
            with reporter.step(f"sign with {', '.join(plan.running_signers)}"):
                report = sign_all(plan.running_signers, report, registry, signers)
        return report
    finally:
        engine.cleanup(image)


def _resolve_bases(
    plan: BuildPlan, inputs: ProvenanceInputs, registry: RegistryClient, reporter: Reporter
) -> list[BaseImage]:
    from image_builder import base_images

    resolver = inputs.resolver or registry
    with resolver.bounded(Deadline(_RESOLVE_SECONDS)):
        bases = base_images.resolve(
            resolver,
            inputs.dockerfile_text,
            build_args=dict(plan.build_args),
            platforms=plan.platforms,
            host_platform=inputs.host_platform,
            withheld=inputs.withheld,
        )
    for base in bases:
        if base.problem:
            reporter.warning(
                f"provenance: the base image {base.name} ({base.platform}) is recorded without "
                f"a digest: {base.problem}"
            )
    return bases


def _with_provenance(
    plan: BuildPlan,
    report: BuildReport,
    inputs: ProvenanceInputs,
    bases: Sequence[BaseImage],
    started: datetime,
    registry: RegistryClient,
) -> BuildReport:
    """The report with the statement for what was pushed, once the base each platform's image
    records is one the trusted side resolved; otherwise Failed, naming why (the images stay
    pushed)."""
    from image_builder import base_images, provenance

    held = parse_reference((report.stored_in or report.images_list)[0])
    recorded: dict[str, tuple[str | None, str | None]] = {}
    try:
        for manifest in report.manifests:
            where = held.with_digest(manifest.digest)
            notes = registry.get_manifest(where).image(where=where.name).annotations
            recorded[manifest.platform] = (
                notes.get(base_images.BASE_NAME),
                notes.get(base_images.BASE_DIGEST),
            )
    except ImageBuilderError as exc:
        return _no_provenance(report, f"cannot read back the pushed manifests: {exc}")
    problem = base_images.check_final(bases, recorded)
    if problem is not None:
        return _no_provenance(report, problem)
    subjects = [Subject(digest=str(report.digest))]
    subjects += [
        Subject(digest=m.digest, platform=m.platform)
        for m in report.manifests
        if m.digest != report.digest
    ]
    statement = provenance.statement(
        plan=plan,
        who=inputs.who,
        subjects=subjects,
        bases=bases,
        builder_id=inputs.builder_id,
        invocation_id=inputs.invocation_id,
        started=started,
        finished=inputs.clock(),
        version=inputs.version,
        signers=plan.provenance.signed_by if plan.provenance else (),
        context=inputs.context,
        dockerfile=inputs.dockerfile,
        withheld=inputs.withheld,
        env_file=inputs.env_file,
    )
    return report.model_copy(update={"provenance": statement})


def _no_provenance(report: BuildReport, why: str) -> BuildReport:
    error = f"provenance not attached: {why}; the images are pushed"
    return report.model_copy(update={"status": "Failed", "error": error})


def _attach_unsigned(report: BuildReport, registry: RegistryClient) -> BuildReport:
    """A pull-request build's unsigned statement (provenance.presubmits: unsigned)."""
    from image_builder import provenance
    from image_builder.signing.attest import attest

    if report.provenance is None:
        return report
    try:
        targets = sign_targets(registry, _pushed(report))
        stored = attest(registry, targets, provenance.encode(report.provenance), None)
    except ImageBuilderError as exc:
        return _no_provenance(report, f"storing the unsigned statement failed: {exc}")
    return report.model_copy(update={"attestations": _refs(targets, stored, None)})


def _pushed(report: BuildReport) -> list[tuple[Reference, str]]:
    texts = report.images_list + report.stored_in
    return [(parse_reference(text), str(report.digest)) for text in texts]


def _refs(
    targets: Sequence[SignTarget], stored: Sequence[str], signer: str | None
) -> list[AttestationRef]:
    """Each stored ``.att`` reference with the repository@digest it is about (same order)."""
    images = [str(t.reference.with_digest(d)) for t in targets for d in t.digests]
    return [
        AttestationRef(image=image, reference=ref, signer=signer)
        for image, ref in zip(images, stored, strict=True)
    ]


def check_registries(
    plan: BuildPlan, registry: RegistryClient, reporter: Reporter
) -> dict[Destination, str]:
    """Before the build: whether each destination's registry answers and lets the credentials
    push there. Returns the destinations that refuse, each with the cause and what to do; an
    answer that tells neither way is a warning, and the push then tries."""
    refused: dict[Destination, str] = {}
    down: dict[str, str] = {}  # host → why, checked once
    for destination in plan.destinations:
        if destination.host in down:
            refused[destination] = down[destination.host]
            continue
        try:
            notice = registry.check_push(
                Reference(host=destination.host, repository=destination.repository)
            )
        except Unreachable as exc:
            down[destination.host] = refused[destination] = f"{exc}; {_reach_hint(plan, exc)}"
            continue
        except PushRefused as exc:
            refused[destination] = str(exc)
            continue
        except ImageBuilderError as exc:  # e.g. a failing token service; the push may get by
            notice = str(exc)
        if notice:
            reporter.warning(f"{notice}; trying the push anyway")
    return refused


def _reach_hint(plan: BuildPlan, exc: Unreachable) -> str:
    key = rule(plan.job_type).registry_key
    host = exc.host
    hint = f"check {key} in config.yaml"
    if is_loopback(host):
        default = host in ("127.0.0.1:5000", "localhost:5000")  # the embedded registry's
        start = "image-builder registry start" + ("" if default else f" --address {host}")
        hint += f", or start it ({start})"
    return hint


def _refused_report(plan: BuildPlan, refused: Mapping[Destination, str]) -> BuildReport:
    """Nothing built, nothing pushed: each refusing repository says why, the others that
    nothing was attempted."""
    hosts = ", ".join(dict.fromkeys(d.host for d in refused))
    why = {
        d: refused.get(d) or f"not attempted: {hosts} failed the check before the build"
        for d in plan.destinations
    }
    return _report(plan, None, error="; ".join(dict.fromkeys(refused.values())), not_pushed=why)


def sign_all(
    names: Sequence[str],
    report: BuildReport,
    registry: RegistryClient,
    signers: SignerFactory,
) -> BuildReport:
    """Run every planned signer on the report's digest, in every repository that holds it (with
    the tags it still owns: ``images_list`` and ``stored_in``); a failure of one signer does not
    stop the others. The same report signs the same set in-process and in ``sign --from-report``."""
    try:
        targets = sign_targets(registry, _pushed(report))
    except ImageBuilderError as exc:
        error = f"cannot read back what was pushed to sign it: {exc}"
        return report.model_copy(update={"status": "Failed", "error": error})
    signed_by: list[str] = []
    errors: list[SigningError] = []
    images = ", ".join(report.images_list or report.stored_in)
    for name in names:
        try:
            signers(name).sign(targets)
            signed_by.append(name)
        except ImageBuilderError as exc:
            message = str(exc) if name in str(exc) else f"signer {name}: {exc}"
            errors.append(SigningError(signer=name, error=f"{message} (images: {images})"))
    attestations: list[AttestationRef] = []  # only what this run stored
    unattested: list[SigningError] = []
    if report.provenance is not None:
        from image_builder import provenance

        body = provenance.encode(report.provenance)
        for name in signed_by:
            signer = signers(name)
            if not isinstance(signer, Attester):
                continue
            try:
                attestations += _refs(targets, signer.attest(targets, body), name)
            except ImageBuilderError as exc:
                error = f"signer {name} did not store the provenance: {exc} (images: {images})"
                unattested.append(SigningError(signer=name, error=error))
    update: dict[str, object] = {
        "signed": not errors,
        "signed_by": signed_by,
        "signing_errors": errors + unattested,
        "attestations": attestations,
    }
    if errors:
        update["status"] = "Failed"
        update["error"] = (
            "; ".join(e.error for e in errors) + "; the images are pushed but not signed"
        )
    elif unattested:
        update["status"] = "Failed"
        update["error"] = "; ".join(e.error for e in unattested) + "; the images are signed"
    return report.model_copy(update=update)


def _report(
    plan: BuildPlan,
    done: Publication | None,
    *,
    error: str | None = None,
    built_only: bool = False,
    atomic: bool = True,
    not_pushed: Mapping[Destination, str] | None = None,
) -> BuildReport:
    references = plan.references
    digest = done.digest if done else None
    tags = done.tags if done else {}
    stored = [d for d in plan.destinations if done and done.stored.get(d, "") is None]
    store_errors = {d: e for d, e in (done.stored.items() if done else ()) if e is not None}
    owned = [str(r) for r in references if _state(tags, r) == "moved"]
    superseded = [
        SupersededImage(image=str(r), digest=tags[r].holds)
        for r in references
        if _state(tags, r) == "superseded"
    ]
    failed = []
    for destination in plan.destinations:
        for ref in destination.references:
            if _state(tags, ref) in ("moved", "superseded"):
                continue
            why = store_errors.get(destination) or (tags[ref].detail if ref in tags else "")
            why = why or (not_pushed or {}).get(destination, "")
            failed.append(FailedImage(image=str(ref), error=why or "not attempted"))
    if error is None and done is not None:
        error = _publish_error(plan, done, store_errors, failed, atomic)
    written = len(owned) + len(superseded)
    all_pushed = (
        done is not None and bool(references) and written == len(references) and not store_errors
    )
    cancelled = proc.CHILDREN.stopping and not (all_pushed or built_only)
    ok = error is None and (all_pushed or built_only)
    if cancelled:
        error = f"cancelled ({proc.CHILDREN.reason or 'signal'}); " + (error or "nothing pushed")
    return BuildReport(
        status="Cancelled" if cancelled else "Succeeded" if ok else "Failed",
        pushed=all_pushed and error is None,
        signed=False,
        image_name=plan.name,
        images_list=owned,
        digest=digest if stored else None,
        tags=list(tag_values(plan.tags)),
        repository_path=f"{plan.registries[0]}/" if plan.registries else "",
        architectures=list(plan.platforms),  # linux/amd64, as the Go action documents
        platforms=list(plan.platforms),
        failed_images=failed,
        superseded_images=superseded,
        stored_in=[str(d.by_digest(digest)) for d in stored if digest],
        publish_mode=None if done is None else "atomic" if atomic else "best-effort",
        error=error,
        manifests=_manifests(plan, done) if done and stored and digest else [],
        signers=[
            SignerInfo(name=s.name, type=s.type) for s in plan.signers if s.runs and plan.push
        ],
    )


def _manifests(plan: BuildPlan, done: Publication) -> list[PlatformDigest]:
    """Each platform's manifest digest in what was pushed; a single image is its platform's."""
    if done.platforms:
        return [PlatformDigest(platform=p, digest=d) for p, d in done.platforms]
    if len(plan.platforms) == 1 and done.digest:
        return [PlatformDigest(platform=plan.platforms[0], digest=done.digest)]
    return []


def _state(tags: dict[Reference, TagResult], ref: Reference) -> str | None:
    return tags[ref].state if ref in tags else None


def _publish_error(
    plan: BuildPlan,
    done: Publication,
    store_errors: dict[Destination, str],
    failed: list[FailedImage],
    atomic: bool,
) -> str | None:
    if store_errors:
        names = ", ".join(f"{d.name} ({e})" for d, e in store_errors.items())
        moved = len(plan.references) - len(failed)
        outcome = (
            "no tag moved anywhere (publish-mode: atomic); a rerun publishes it all"
            if atomic
            else f"{moved} tag(s) moved in the other repositories (publish-mode: best-effort)"
        )
        return (
            f"{len(store_errors)} of {len(plan.destinations)} repository(ies) did not receive "
            f"the image: {names}; {outcome}"
        )
    if failed:
        return (
            f"{len(failed)} of {len(plan.references)} tag(s) were not moved to {done.digest}: "
            + ", ".join(f.image for f in failed)
            + "; the others were; a rerun moves the rest"
        )
    return None


def _cancelled(report: BuildReport, when: str) -> BuildReport:
    error = f"cancelled ({proc.CHILDREN.reason or 'signal'}) {when}; the image is pushed, unsigned"
    return report.model_copy(update={"status": "Cancelled", "error": error})
