"""Which signers run for a build, what they sign, and the protocol they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from image_builder.config import Config
from image_builder.context import CIContext
from image_builder.oci import Reference

if TYPE_CHECKING:
    from image_builder.registry import RegistryClient


@dataclass(frozen=True, kw_only=True)
class SignerChoice:
    """One configured signer and whether it runs for this build, with the reason."""

    name: str
    type: str
    runs: bool
    reason: str


@dataclass(frozen=True, kw_only=True)
class ProvenanceChoice:
    """Whether the build attaches SLSA provenance, signed by which signers, and why."""

    runs: bool
    signed_by: tuple[str, ...]  # the cosign signers that sign it; empty: unsigned
    reason: str


@dataclass(frozen=True, kw_only=True)
class PlatformManifest:
    digest: str
    size: int
    platform: str


@dataclass(frozen=True, kw_only=True)
class SignTarget:
    """One repository's view of the pushed image: its tags, the pushed digest, and for an index
    the platform manifests it lists. Everything here comes from the push and the registry's
    bytes for that digest, never from re-reading a tag."""

    reference: Reference  # repository@digest
    tags: tuple[str, ...]
    size: int
    media_type: str
    platforms: tuple[PlatformManifest, ...] = ()

    @property
    def repository(self) -> str:
        """registry/repository, the signature identity"""
        return self.reference.name

    @property
    def digest(self) -> str:
        return self.reference.digest or ""

    @property
    def digests(self) -> tuple[str, ...]:
        """The index (or image) first, then each platform manifest."""
        return (self.digest, *(p.digest for p in self.platforms))


class Signer(Protocol):
    name: str

    def sign(self, targets: Sequence[SignTarget]) -> None:
        """Sign every digest of every target; raise an ImageBuilderError naming what failed."""
        ...


@runtime_checkable
class Attester(Protocol):
    """A signer that also signs attestations (cosign keys; the Signify service does not)."""

    def attest(self, targets: Sequence[SignTarget], statement: bytes) -> list[str]:
        """Store ``statement``, signed, at every digest of every target; the references."""
        ...


def select_provenance(
    config: Config, ctx: CIContext, signers: Sequence[SignerChoice], *, push: bool
) -> ProvenanceChoice:
    """Release builds get provenance signed by every cosign signer that signs them. Pull-request
    and merge-group builds get none, or an unsigned statement when the config asks."""
    settings = config.provenance
    if not push:
        return ProvenanceChoice(runs=False, signed_by=(), reason="--no-push: nothing is pushed")
    if not settings.enabled:
        return ProvenanceChoice(runs=False, signed_by=(), reason="provenance.enabled is false")
    if not ctx.rule.signed:
        if settings.presubmits == "unsigned" and ctx.dirty:
            reason = f"{ctx.job_type} builds get an unsigned statement, but {ctx.dirty}"
            return ProvenanceChoice(runs=False, signed_by=(), reason=reason)
        if settings.presubmits == "unsigned":
            reason = f"unsigned: provenance.presubmits is unsigned for {ctx.job_type} builds"
            return ProvenanceChoice(runs=True, signed_by=(), reason=reason)
        reason = (
            f"{ctx.job_type} builds get none (provenance.presubmits: unsigned gives them an "
            "unsigned statement)"
        )
        return ProvenanceChoice(runs=False, signed_by=(), reason=reason)
    cosign = tuple(s.name for s in signers if s.runs and s.type == "cosign")
    if cosign:
        reason = f"signed by {', '.join(cosign)}, as release builds are"
        return ProvenanceChoice(runs=True, signed_by=cosign, reason=reason)
    others = [s for s in signers if s.type == "cosign"]
    why = "; ".join(f"{s.name}: {s.reason}" for s in others) or "no cosign signer is configured"
    return ProvenanceChoice(
        runs=False, signed_by=(), reason=f"no cosign signer signs this build ({why})"
    )


def select_signers(
    config: Config, ctx: CIContext, repository: str | None, *, blocked: str | None = None
) -> tuple[SignerChoice, ...]:
    """The signers enabled under ``'*'`` plus those enabled for ``repository``, filtered by job
    type. Pull-request and merge-group builds are never signed, whatever the config says.
    ``blocked`` (from the trust policy's signing-refs) stops every signer, with that reason."""
    enabled = config.sign_config.enabled_signers
    wildcard = set(enabled.get("*", ()))
    for_repo = set(enabled.get(repository, ())) if repository else set()
    choices = []
    for signer in config.sign_config.signers:
        where = []
        if signer.name in wildcard:
            where.append("'*'")
        if signer.name in for_repo:
            where.append(repr(repository))
        if not where:
            reason = f"not enabled under '*'{' or ' + repr(repository) if repository else ''}"
            choices.append(
                SignerChoice(name=signer.name, type=signer.type, runs=False, reason=reason)
            )
            continue
        enabled_text = f"enabled under {' and '.join(where)}"
        if not ctx.rule.signed:
            reason = f"{enabled_text}, but {ctx.job_type} builds are never signed"
            runs = False
        elif ctx.dirty:
            reason = f"{enabled_text}, but {ctx.dirty}"
            runs = False
        elif blocked is not None:
            reason = f"{enabled_text}, but {blocked}"
            runs = False
        elif signer.job_type is not None and ctx.job_type not in signer.job_type:
            reason = (
                f"{enabled_text}, but its job-type {list(signer.job_type)} excludes {ctx.job_type}"
            )
            runs = False
        else:
            reason = f"{enabled_text}; {ctx.job_type} builds are signed"
            runs = True
        choices.append(SignerChoice(name=signer.name, type=signer.type, runs=runs, reason=reason))
    return tuple(choices)


def sign_targets(
    registry: RegistryClient, pushed: Sequence[tuple[Reference, str]]
) -> list[SignTarget]:
    """What to sign, from ``(reference, digest)`` pairs: per repository and digest, the tags, and
    the bytes the registry holds for that digest (checked against it), with the platform
    manifests of an index. A tag is never read again here."""
    groups: dict[Reference, list[str]] = {}
    for ref, digest in pushed:
        tags = groups.setdefault(ref.with_digest(digest), [])
        if ref.tag and not ref.digest and ref.tag not in tags:
            tags.append(ref.tag)
    targets = []
    for at_digest, tags in groups.items():
        manifest = registry.get_manifest(at_digest)
        platforms = tuple(
            PlatformManifest(
                digest=entry.digest,
                size=entry.size,
                platform=str(entry.platform) if entry.platform else "",
            )
            for entry in manifest.entries(registry.max_entries, where=str(at_digest))
        )
        targets.append(
            SignTarget(
                reference=at_digest,
                tags=tuple(tags),
                size=manifest.size,
                media_type=manifest.media_type,
                platforms=platforms,
            )
        )
    return targets
