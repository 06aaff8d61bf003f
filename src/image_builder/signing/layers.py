"""cosign's storage for signatures and attestations: layers of the OCI manifest at a tag beside
the image (``sha256-<hex>.sig``, ``.att``), appended, never replaced."""

from __future__ import annotations

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
from pathlib import Path

from image_builder import wire
from image_builder.errors import RuntimeFailure
from image_builder.oci import Reference
from image_builder.registry import OCI_MANIFEST, RegistryClient, RegistryError

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
_APPEND_ATTEMPTS = 8


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
    ours = wire.Descriptor(
        media_type=media_type, size=len(body), digest=payload_digest, annotations=annotations
    )
    for attempt in range(_APPEND_ATTEMPTS):
        found = _read(registry, tag_ref)
        if not any(_same_layer(layer, ours) for layer in found.layers):
            try:
                _write(registry, repo, tag_ref, [*found.kept, ours])
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
    :func:`append_layer` still guards). Without a private lock folder, no lock is taken."""
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
    ours: wire.Descriptor,
    sleep: Callable[[float], None],
) -> bool:
    """Our layer is still there after two reads a short random pause apart."""
    for _ in range(2):
        sleep(random.uniform(0.02, 0.1))  # noqa: S311 - jitter, not security
        if not any(_same_layer(layer, ours) for layer in read_layers(registry, tag_ref)):
            return False
    return True


def _same_layer(layer: wire.Descriptor, ours: wire.Descriptor) -> bool:
    return layer.digest == ours.digest and all(
        layer.annotations.get(k) == v for k, v in ours.annotations.items()
    )


def read_layers(registry: RegistryClient, tag_ref: Reference) -> tuple[wire.Descriptor, ...]:
    """The layers of the manifest at ``tag_ref`` (none when there is none), within
    ``max-manifest-entries``. A layer that is no descriptor is left out (see
    :class:`wire.SignatureManifest`)."""
    return _read(registry, tag_ref).layers


def _read(registry: RegistryClient, tag_ref: Reference) -> wire.SignatureManifest:
    try:
        manifest = registry.get_manifest(tag_ref)
    except RegistryError as exc:
        if "does not exist" in str(exc):
            return wire.SignatureManifest()
        raise
    try:
        return wire.parse(
            wire.SignatureManifest,
            manifest.json(),
            what="the manifest",
            max_entries=registry.max_entries,
        )
    except wire.WireError as exc:
        if exc.kind == "too_many":
            raise RegistryError(f"{tag_ref} {exc.detail}; refusing to read them") from None
        raise RegistryError(
            f"{tag_ref} is not a signature or attestation manifest: its layers are not a list"
        ) from None


def _write(
    registry: RegistryClient,
    repo: Reference,
    tag_ref: Reference,
    layers: Sequence[wire.Layer],
) -> None:
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    config_digest = registry.put_blob(repo, config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": config_digest},
        "layers": [layer.document() for layer in layers],
    }
    registry.put_manifest(
        tag_ref, json.dumps(manifest, separators=(",", ":")).encode(), OCI_MANIFEST
    )
