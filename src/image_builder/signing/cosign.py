"""Key-based signatures in cosign's format: a simple-signing payload signed with ECDSA P-256
over SHA-256, stored as a layer of the OCI manifest tagged ``sha256-<hex>.sig`` in the image's
own repository. Signatures are appended, never replaced."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import random
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder.errors import RuntimeFailure
from image_builder.oci import DIGEST, Reference
from image_builder.registry import OCI_MANIFEST, RegistryClient, RegistryError
from image_builder.signing import SignTarget

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_APPEND_ATTEMPTS = 8


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


def append_layer(
    registry: RegistryClient,
    tag_ref: Reference,
    body: bytes,
    *,
    media_type: str,
    annotations: Mapping[str, str],
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Add one layer (a signature, an attestation) to the manifest at ``tag_ref``, keeping the
    layers already there.

    Registries have no compare-and-swap for tags, so a concurrent writer can overwrite our write.
    After each write we read the tag back (after a short random pause) and write again, merged
    with whatever is there now, until our layer is seen to stay.
    """
    with _machine_lock(str(tag_ref)):
        _append(registry, tag_ref, body, media_type, dict(annotations), sleep)


def _append(
    registry: RegistryClient,
    tag_ref: Reference,
    body: bytes,
    media_type: str,
    annotations: dict[str, str],
    sleep: Callable[[float], None],
) -> None:
    repo = Reference(host=tag_ref.host, repository=tag_ref.repository)
    payload_digest = registry.put_blob(repo, body)
    ours = {
        "mediaType": media_type,
        "size": len(body),
        "digest": payload_digest,
        "annotations": annotations,
    }
    for attempt in range(_APPEND_ATTEMPTS):
        layers = existing_layers(registry, tag_ref)
        if not any(_same_layer(layer, ours) for layer in layers):
            try:
                _write(registry, repo, tag_ref, [*layers, ours])
            except RegistryError as exc:
                # The Distribution registry can answer "blob unknown" for a blob that another
                # signer is uploading at this very moment (the same config, say): a collision
                # like any other; upload again and retry.
                if "BLOB_UNKNOWN" not in str(exc):
                    raise
                registry.put_blob(repo, body)
                sleep(random.uniform(0, min(0.05 * 2**attempt, 2.0)))  # noqa: S311 - jitter
                continue
        if _stays(registry, tag_ref, ours, sleep):
            return
        # Writers that keep colliding back off, each by its own random time, until one at a
        # time gets through (a loaded machine stretches every read-modify-write).
        sleep(random.uniform(0, min(0.05 * 2**attempt, 2.0)))  # noqa: S311 - jitter
    raise RuntimeFailure(f"could not store {tag_ref}: another writer kept replacing it")


@contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """Signers on this machine take turns at one signature tag, so none of them can drop
    another's layer (the registry has no compare-and-swap; across machines the read-back in
    :func:`append_signature` still guards). Without a private lock folder, no lock is taken."""
    folder = Path(tempfile.gettempdir()) / f"image-builder-locks-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = folder.lstat()
        private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
    except OSError:
        private = False
    if not private:
        yield
        return
    key = hashlib.sha256(name.encode()).hexdigest()[:32]
    fd = os.open(
        folder / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
    )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stays(
    registry: RegistryClient,
    tag_ref: Reference,
    ours: Mapping[str, Any],
    sleep: Callable[[float], None],
) -> bool:
    """Our layer is still there after two reads a short random pause apart."""
    for _ in range(2):
        sleep(random.uniform(0.02, 0.1))  # noqa: S311 - jitter, not security
        if not any(_same_layer(layer, ours) for layer in existing_layers(registry, tag_ref)):
            return False
    return True


def _same_layer(layer: Mapping[str, Any], ours: Mapping[str, Any]) -> bool:
    annotations = layer.get("annotations")
    if not isinstance(annotations, dict):
        return False
    wanted = ours["annotations"]
    return layer.get("digest") == ours["digest"] and all(
        annotations.get(k) == v for k, v in wanted.items()
    )


def existing_layers(registry: RegistryClient, tag_ref: Reference) -> list[dict[str, Any]]:
    try:
        manifest = registry.get_manifest(tag_ref)
    except RegistryError as exc:
        if "does not exist" in str(exc):
            return []
        raise
    layers = manifest.json().get("layers") or []
    if not isinstance(layers, list):
        raise RegistryError(
            f"{tag_ref} is not a signature or attestation manifest: its layers are not a list"
        )
    if len(layers) > registry.max_entries:
        raise RegistryError(
            f"{tag_ref} lists {len(layers)} layers, more than max-manifest-entries "
            f"({registry.max_entries}); refusing to read them"
        )
    # A layer without a digest (planted by anyone who can push) is dropped: it names nothing
    # to verify, and writing it back would fail.
    return [
        layer
        for layer in layers
        if isinstance(layer, dict)
        and isinstance(layer.get("digest"), str)
        and DIGEST.fullmatch(layer["digest"])
    ]


def _write(
    registry: RegistryClient, repo: Reference, tag_ref: Reference, layers: list[dict[str, Any]]
) -> None:
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = registry.put_blob(repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": layers,
    }
    registry.put_manifest(
        tag_ref, json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST
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
    layers = existing_layers(registry, repo.with_tag(signature_tag(digest)))
    candidates = [layer for layer in layers if layer.get("mediaType") == SIMPLE_SIGNING]
    if not candidates:
        return DigestCheck(digest=digest, ok=False, problem="no signature")
    problems: list[str] = []
    for layer in candidates:
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        if not isinstance(signature, str):
            problems.append("malformed signature entry")
            continue
        try:
            body = registry.get_blob(repo, str(layer.get("digest")))
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
    try:
        data = json.loads(body)
        critical = data["critical"]
        signed_digest = critical["image"]["docker-manifest-digest"]
        identity = critical["identity"]["docker-reference"]
        kind = critical["type"]
    except (ValueError, KeyError, TypeError):
        return "malformed payload"
    if kind != PAYLOAD_TYPE or not isinstance(signed_digest, str):
        return "malformed payload"
    if signed_digest != digest:
        return f"payload for another digest ({signed_digest})"
    if identity != repository:
        return f"payload for another repository ({identity})"
    return None
