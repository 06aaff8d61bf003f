"""Key-based signatures in cosign's format: a simple-signing payload signed with ECDSA P-256
over SHA-256, stored as a layer of the OCI manifest tagged ``sha256-<hex>.sig`` in the image's
own repository. Signatures are appended, never replaced."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder import wire
from image_builder.oci import Reference
from image_builder.registry import RegistryClient, RegistryError
from image_builder.signing import SignTarget
from image_builder.signing.layers import append_layer, read_layers
from image_builder.wire import SIGNATURE_ANNOTATION

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
PAYLOAD_TYPE = "cosign container image signature"


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def payload(repository: str, digest: str, optional: Mapping[str, str] | None = None) -> bytes:
    body = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": dict(optional) if optional else None,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def sign_payload(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    """Base64 of the ASN.1 DER ECDSA signature over SHA-256 of ``data``."""
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


class CosignSigner:
    def __init__(
        self,
        *,
        name: str,
        key: ec.EllipticCurvePrivateKey,
        registry: RegistryClient,
        optional: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self._key = key
        self._registry = registry
        self._optional = dict(optional or {})
        self._sleep = sleep

    def sign(self, targets: Sequence[SignTarget]) -> None:
        """Sign every digest of every target; different digests are signed concurrently (each
        has its own signature tag, so they never contend)."""
        from concurrent.futures import ThreadPoolExecutor

        jobs = [(target, digest) for target in targets for digest in target.digests]
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(jobs)))) as pool:
            for future in [pool.submit(self._sign_one, t, d) for t, d in jobs]:
                future.result()

    def attest(self, targets: Sequence[SignTarget], statement: bytes) -> list[str]:
        """Store ``statement`` signed at every digest of every target (see :mod:`.attest`)."""
        from image_builder.signing.attest import attest

        return attest(self._registry, targets, statement, self._key, sleep=self._sleep)

    def _sign_one(self, target: SignTarget, digest: str) -> None:
        repo = target.reference
        if verify_digest(self._registry, repo, digest, self._key.public_key()).ok:
            return  # a re-run: this key already signed this digest here
        body = payload(target.repository, digest, self._optional)
        append_signature(
            self._registry, repo, digest, body, sign_payload(self._key, body), sleep=self._sleep
        )


def append_signature(
    registry: RegistryClient,
    repo: Reference,
    digest: str,
    body: bytes,
    signature: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Add one signature layer to ``sha256-<hex>.sig``, keeping the layers already there."""
    append_layer(
        registry,
        repo.with_tag(signature_tag(digest)),
        body,
        media_type=SIMPLE_SIGNING,
        annotations={SIGNATURE_ANNOTATION: signature},
        sleep=sleep,
    )


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DigestCheck:
    digest: str
    ok: bool
    problem: str | None = None
    signatures: int = 0


def verify_digest(
    registry: RegistryClient, repo: Reference, digest: str, key: ec.EllipticCurvePublicKey
) -> DigestCheck:
    """Whether at least one signature on ``digest`` verifies with ``key`` and names this digest
    and repository. Otherwise the most specific reason it does not."""
    layers = read_layers(registry, repo.with_tag(signature_tag(digest)))
    candidates = [layer for layer in layers if layer.media_type == SIMPLE_SIGNING]
    if not candidates:
        return DigestCheck(digest=digest, ok=False, problem="no signature")
    problems: list[str] = []
    for layer in candidates:
        try:
            signature = wire.parse(
                wire.SignatureAnnotations, layer.annotations, what="the annotations"
            ).signature
        except wire.WireError:
            problems.append("malformed signature entry")
            continue
        try:
            body = registry.get_blob(repo, layer.digest)
        except RegistryError as exc:
            problems.append(f"unreadable signature payload ({exc})")
            continue
        try:
            key.verify(base64.b64decode(signature, validate=True), body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            problems.append("wrong key")
            continue
        problem = check_payload(body, repo.name, digest)
        if problem is None:
            return DigestCheck(digest=digest, ok=True, signatures=len(candidates))
        problems.append(problem)
    # A payload problem under a valid signature says more than a signature from another key.
    specific = [p for p in problems if p != "wrong key"]
    reason = (
        specific[0]
        if specific
        else f"wrong key: none of {len(candidates)} signature(s) verify with it"
    )
    return DigestCheck(digest=digest, ok=False, problem=reason, signatures=len(candidates))


def check_payload(body: bytes, repository: str, digest: str) -> str | None:
    """Why the simple-signing payload ``body`` does not vouch for ``digest`` in ``repository``;
    None when it does."""
    try:
        found = wire.parse(wire.SimpleSigning, body, what="the payload")
    except wire.WireError:
        return "malformed payload"
    if found.critical.type != PAYLOAD_TYPE:
        return "malformed payload"
    if found.digest != digest:
        return f"payload for another digest ({found.digest})"
    if found.identity != repository:
        return f"payload for another repository ({found.identity})"
    return None
