"""Attestations in cosign's layout: a DSSE envelope holding an in-toto statement, stored as a
layer (media type ``application/vnd.dsse.envelope.v1+json``, annotation ``predicateType``) of
the OCI manifest tagged ``sha256-<hex>.att`` in the image's own repository. Layers are appended,
never replaced, as signatures are; nothing is added to the image or its index. A statement no
key signs (pull requests, when config asks) is stored as the bare statement (media type
``application/vnd.in-toto+json``): an envelope needs a signature."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from image_builder import provenance
from image_builder.errors import RuntimeFailure
from image_builder.oci import Reference
from image_builder.registry import RegistryClient, RegistryError
from image_builder.signing import SignTarget
from image_builder.signing.dsse import (
    IN_TOTO,
    MAX_ENVELOPE_BYTES,
    MEDIA_TYPE,
    EnvelopeError,
    open_envelope,
    seal,
)
from image_builder.signing.layers import append_layer, read_layers
from image_builder.wire import SIGNATURE_ANNOTATION

PREDICATE_ANNOTATION = "predicateType"


def attestation_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".att"


def attest(
    registry: RegistryClient,
    targets: Sequence[SignTarget],
    statement: bytes,
    key: ec.EllipticCurvePrivateKey | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Store ``statement`` (signed by ``key``; unsigned without one) at every digest of every
    target. A digest that already holds this run's statement from this key keeps it alone (a
    re-run adds nothing). Returns the ``repository:sha256-<hex>.att`` references."""
    ours = provenance.read(statement)
    strangers = [d for t in targets for d in t.digests if d not in ours.subjects]
    if strangers:  # a statement is stored only where it names the digest
        raise RuntimeFailure(
            f"the provenance statement does not name {', '.join(dict.fromkeys(strangers))}, "
            "which the registry holds for this image; nothing was attested"
        )

    def store(target: SignTarget, digest: str) -> str:
        tag_ref = target.reference.with_tag(attestation_tag(digest))
        if key is None or not _already(registry, target.reference, digest, key, ours):
            append_layer(
                registry,
                tag_ref,
                seal(statement, key) if key is not None else statement,
                media_type=MEDIA_TYPE if key is not None else IN_TOTO,
                # cosign writes an empty signature annotation on attestation layers, too
                annotations={
                    PREDICATE_ANNOTATION: provenance.PREDICATE_TYPE,
                    SIGNATURE_ANNOTATION: "",
                },
                sleep=sleep,
            )
        return str(tag_ref)

    # Each digest has its own .att tag, so they never contend: stored concurrently, as
    # signatures are, and listed in target order.
    jobs = [(target, digest) for target in targets for digest in target.digests]
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(jobs)))) as pool:
        return [f.result() for f in [pool.submit(store, t, d) for t, d in jobs]]


def _already(
    registry: RegistryClient,
    repo: Reference,
    digest: str,
    key: ec.EllipticCurvePrivateKey,
    ours: provenance.Provenance,
) -> bool:
    found = read_attestations(registry, repo, digest, key.public_key())
    return any(
        p.invocation_id == ours.invocation_id
        and p.builder_id == ours.builder_id
        and p.subjects == ours.subjects
        for p in found.verified
    )


@dataclass(frozen=True, kw_only=True)
class Found:
    """The provenance statements at one digest that ``key`` signed, and what was wrong with the
    others."""

    digest: str
    verified: tuple[provenance.Provenance, ...]
    problems: tuple[str, ...]
    layers: int  # DSSE layers found
    unsigned: int = 0  # bare statements, which no key signed

    @property
    def problem(self) -> str:
        """The most specific reason none verified: a bad statement under a valid signature says
        more than a signature from another key."""
        if not self.layers and self.unsigned:
            return f"only {self.unsigned} unsigned statement(s), which no key signed"
        if not self.layers:
            return "no provenance attestation"
        specific = [p for p in self.problems if not p.startswith("bad signature")]
        if specific:
            return specific[0]
        return (
            f"bad signature: none of {self.layers} attestation(s) verify with the key (another "
            "key signed them, or they were changed)"
        )


def read_attestations(
    registry: RegistryClient, repo: Reference, digest: str, key: ec.EllipticCurvePublicKey
) -> Found:
    """Every provenance statement at ``digest`` whose envelope ``key`` signed and whose subjects
    include ``digest``; the registry's answers are read within its caps (entries, sizes)."""
    every = read_layers(registry, repo.with_tag(attestation_tag(digest)))
    layers = [layer for layer in every if layer.media_type == MEDIA_TYPE]
    unsigned = sum(1 for layer in every if layer.media_type == IN_TOTO)
    verified: list[provenance.Provenance] = []
    problems: list[str] = []
    for layer in layers:
        try:
            body = registry.get_blob(repo, layer.digest, limit=MAX_ENVELOPE_BYTES)
        except RegistryError as exc:
            problems.append(f"unreadable attestation ({exc})")
            continue
        try:
            found = provenance.read(open_envelope(body, key))
        except (EnvelopeError, provenance.StatementError) as exc:
            problems.append(str(exc))
            continue
        if digest not in found.subjects:
            problems.append(f"a statement for other subjects ({', '.join(found.subjects)})")
            continue
        verified.append(found)
    return Found(
        digest=digest,
        verified=tuple(verified),
        problems=tuple(problems),
        layers=len(layers),
        unsigned=unsigned,
    )
