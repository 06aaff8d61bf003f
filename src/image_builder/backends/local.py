"""The local backend: build once, push to every reference concurrently, report exactly what
landed. This is also what runs inside the trusted CI backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from image_builder.engines import BuiltImage, Engine
from image_builder.errors import ImageBuilderError
from image_builder.plan import BuildPlan
from image_builder.platforms import arch_of
from image_builder.registry import RegistryClient
from image_builder.report import BuildReport, FailedImage, SigningError
from image_builder.reporter import Reporter
from image_builder.signing import Signer, sign_targets

MAX_CONCURRENT_PUSHES = 8


@dataclass(kw_only=True)
class PushResults:
    digests: dict[str, str] = field(default_factory=dict)  # reference → digest from the push
    errors: dict[str, str] = field(default_factory=dict)  # reference → why it failed


SignerFactory = Callable[[str], Signer]


class Publisher(Protocol):
    def push(self, image: BuiltImage, reference: str, *, plain_http: bool) -> str:
        """Copy ``image`` to ``reference`` and return the digest the copy itself reported."""
        ...


def execute(
    plan: BuildPlan,
    engine: Engine,
    publisher: Publisher,
    reporter: Reporter,
    *,
    registry: RegistryClient | None = None,
    signers: SignerFactory | None = None,
    sign: bool = True,
) -> BuildReport:
    """Run ``plan``; never raises for build, push or signing failures: they end up in the report.

    Signing happens only when every reference was pushed with one digest, and signs that digest;
    without ``sign`` it is left to a later ``sign --from-report``."""
    image: BuiltImage | None = None
    try:
        try:
            with reporter.step(f"build {plan.name} for {', '.join(plan.platforms)}"):
                image = engine.build(plan)
        except ImageBuilderError as exc:
            return _report(plan, PushResults(), error=f"build failed: {exc}")
        if not plan.push:
            engine.tag(image, plan.references)
            reporter.info(
                "--no-push: nothing was pushed; the image is in local storage as "
                + ", ".join(plan.references)
            )
            return _report(plan, PushResults(), built_only=True)
        with reporter.step(f"push to {len(plan.references)} reference(s)"):
            results = push_all(publisher, image, plan, registry)
        report = _report(plan, results)
        if sign and report.pushed and report.digest and plan.running_signers:
            if registry is None or signers is None:
                raise ValueError(
                    "signers are planned but no registry client or signer factory was given"
                )
            with reporter.step(f"sign with {', '.join(plan.running_signers)}"):
                report = sign_all(plan.running_signers, report, report.digest, registry, signers)
        return report
    finally:
        engine.cleanup(image)


def push_all(
    publisher: Publisher,
    image: BuiltImage,
    plan: BuildPlan,
    registry: RegistryClient | None = None,
) -> PushResults:
    """Push to every reference. Repositories are pushed concurrently; the tags of one repository
    one after another, because concurrent pushes into one repository race on its blobs (the
    registry can see a manifest before the other push's blob upload has finished). After the
    first tag, a repository already has every blob, so the others cost one manifest upload."""
    results = PushResults()
    plain = set(plan.insecure_registries)
    groups: dict[str, list[str]] = {}
    for reference in plan.references:
        groups.setdefault(reference.rsplit(":", 1)[0], []).append(reference)

    def push_group(references: list[str]) -> list[tuple[str, str | None, str | None]]:
        out: list[tuple[str, str | None, str | None]] = []
        for number, reference in enumerate(references):
            if out and out[-1][1] is None:
                # The repository just refused or vanished: say so for the rest instead of
                # waiting through every retry again. A re-run pushes them.
                failed = out[-1][0]
                out += [
                    (r, None, f"not attempted: the push of {failed} to the same repository failed")
                    for r in references[number:]
                ]
                break
            registry_name = next(r for r in plan.registries if reference.startswith(r + "/"))
            try:
                digest = publisher.push(image, reference, plain_http=registry_name in plain)
                if registry is not None:
                    confirm_pushed(registry, reference, digest)
                out.append((reference, digest, None))
            except ImageBuilderError as exc:
                out.append((reference, None, str(exc)))
        return out

    workers = max(1, min(MAX_CONCURRENT_PUSHES, len(groups)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for group in pool.map(push_group, groups.values()):
            for reference, digest, error in group:
                if digest is not None:
                    results.digests[reference] = digest
                else:
                    results.errors[reference] = error or "push failed"
    return results


def confirm_pushed(registry: RegistryClient, reference: str, digest: str) -> None:
    """A push counts only when the registry itself answers the reference with its digest."""
    from image_builder.registry import RegistryError, parse_reference

    try:
        found = registry.manifest_digest(parse_reference(reference))
    except RegistryError as exc:
        raise RegistryError(f"pushed {reference}, but cannot confirm it: {exc}") from None
    if found is None:
        raise RegistryError(f"pushed {reference}, but the registry does not have it")
    if found != digest:
        raise RegistryError(f"pushed {reference} as {digest}, but the registry answers {found}")


def sign_all(
    names: Sequence[str],
    report: BuildReport,
    digest: str,
    registry: RegistryClient,
    signers: SignerFactory,
) -> BuildReport:
    """Run every planned signer on the pushed digest; a failure of one does not stop the others."""
    try:
        targets = sign_targets(registry, [(ref, digest) for ref in report.images_list])
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
            images = ", ".join(report.images_list)
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
    plan: BuildPlan, results: PushResults, *, error: str | None = None, built_only: bool = False
) -> BuildReport:
    digests = set(results.digests.values())
    if len(digests) > 1:
        detail = "; ".join(f"{ref} → {d}" for ref, d in results.digests.items())
        error = f"the pushed references ended with different digests: {detail}"
    failed = [FailedImage(image=ref, error=msg) for ref, msg in results.errors.items()]
    if error is None and failed:
        error = f"{len(failed)} of {len(plan.references)} reference(s) were not pushed"
    pushed_refs = [ref for ref in plan.references if ref in results.digests]
    all_pushed = (
        bool(plan.references) and len(pushed_refs) == len(plan.references) and len(digests) == 1
    )
    ok = error is None and (all_pushed or built_only)
    return BuildReport(
        status="Succeeded" if ok else "Failed",
        pushed=all_pushed and error is None,
        signed=False,
        image_name=plan.name,
        images_list=pushed_refs,
        digest=digests.pop() if len(digests) == 1 else None,
        tags=[t.value for t in plan.tags],
        repository_path=f"{plan.registries[0]}/" if plan.registries else "",
        architectures=[arch_of(p) for p in plan.platforms],
        platforms=list(plan.platforms),
        failed_images=failed,
        error=error,
    )
