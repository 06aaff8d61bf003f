"""The local backend: build once, publish content first and tags second (see
:mod:`image_builder.publish`), report exactly what landed, sign. This is also what runs inside
the trusted CI backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from image_builder import proc
from image_builder.engines import BuiltImage, Engine
from image_builder.errors import ImageBuilderError
from image_builder.http import Deadline
from image_builder.oci import Destination, Reference, parse_reference
from image_builder.plan import BuildPlan
from image_builder.publish import Publication, Publisher, TagResult, publish
from image_builder.registry import RegistryClient
from image_builder.report import BuildReport, FailedImage, SigningError, SupersededImage
from image_builder.reporter import Reporter
from image_builder.signing import Signer, sign_targets
from image_builder.tags import tag_values

SignerFactory = Callable[[str], Signer]


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
) -> BuildReport:
    """Run ``plan``; never raises for build, push or signing failures: they end up in the report.

    Signing happens only when every repository holds the image and every tag was written, and
    signs that digest; without ``sign`` it is left to a later ``sign --from-report``. After
    SIGTERM or SIGINT (see :mod:`image_builder.proc`) the report says Cancelled and names what
    was done before."""
    image: BuiltImage | None = None
    try:
        try:
            with reporter.step(f"build {plan.name} for {', '.join(plan.platforms)}"):
                image = engine.build(plan)
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
            )
        report = _report(plan, done, atomic=atomic)
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


def sign_all(
    names: Sequence[str],
    report: BuildReport,
    registry: RegistryClient,
    signers: SignerFactory,
) -> BuildReport:
    """Run every planned signer on the report's digest, in every repository that holds it (with
    the tags it still owns: ``images_list`` and ``stored_in``); a failure of one signer does not
    stop the others. The same report signs the same set in-process and in ``sign --from-report``."""
    texts = report.images_list + report.stored_in
    pushed = [(parse_reference(text), str(report.digest)) for text in texts]
    try:
        targets = sign_targets(registry, pushed)
    except ImageBuilderError as exc:
        error = f"cannot read back what was pushed to sign it: {exc}"
        return report.model_copy(update={"status": "Failed", "error": error})
    signed_by: list[str] = []
    errors: list[SigningError] = []
    for name in names:
        try:
            signers(name).sign(targets)
            signed_by.append(name)
        except ImageBuilderError as exc:
            images = ", ".join(report.images_list or report.stored_in)
            message = str(exc) if name in str(exc) else f"signer {name}: {exc}"
            errors.append(SigningError(signer=name, error=f"{message} (images: {images})"))
    update: dict[str, object] = {
        "signed": not errors,
        "signed_by": signed_by,
        "signing_errors": errors,
    }
    if errors:
        update["status"] = "Failed"
        update["error"] = (
            "; ".join(e.error for e in errors) + "; the images are pushed but not signed"
        )
    return report.model_copy(update=update)


def _report(
    plan: BuildPlan,
    done: Publication | None,
    *,
    error: str | None = None,
    built_only: bool = False,
    atomic: bool = True,
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
    )


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
