"""The image leaves the sandbox as data: an OCI image layout. The build account wrote it, so it is
hostile. The trusted side copies only what the layout's index reaches, opening each file without
following symlinks, checking its size and sha256 on the way, into a folder of its own. Nothing the
build account can still change is read again after that."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from image_builder.errors import RuntimeFailure

REF_NAME = "image"  # the one name in every layout this project writes
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_INDEX_ENTRIES = 64
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_INDEX_TYPES = {
    _OCI_INDEX,
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
_MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}


class LayoutError(RuntimeFailure):
    """The layout the build produced is not a well-formed image: the build is not trusted."""


@dataclass(frozen=True, kw_only=True)
class LayoutImage:
    """A verified copy of the built image: ``path`` holds an OCI layout whose ``index.json`` names
    exactly one image or index, ``digest``; each platform manifest is in ``platforms``."""

    path: Path
    digest: str
    is_list: bool
    platforms: dict[str, str]  # "linux/arm64" → manifest digest

    @property
    def source(self) -> str:
        """The reference skopeo and buildah read the image from."""
        return f"oci:{self.path}:{REF_NAME}"


def take(untrusted: Path, dest: Path, platforms: Sequence[str]) -> LayoutImage:
    """Copy the image named ``image`` in the layout at ``untrusted`` into the new folder
    ``dest``, verified, and name it ``image`` there.

    A single image must be of ``platforms[0]``. For an index, the trusted side writes its own, in
    the order of ``platforms``, naming each platform by the image's own config: the digest never
    depends on which platform a build finished first, and the same images always give the same
    index. An image for a platform that was not asked for is refused, and so is a missing one."""
    if untrusted.is_symlink():
        raise LayoutError(f"the build's layout {untrusted} is a symlink")
    (dest / "blobs" / "sha256").mkdir(parents=True, mode=0o700)
    top = _named(_entries(untrusted), REF_NAME)
    found: dict[str, dict[str, Any]] = {}
    if top["mediaType"] in _INDEX_TYPES:
        data = _blob(untrusted, None, top["digest"], top["size"], MAX_MANIFEST_BYTES)
        children = _list(_load_json(data, top["digest"]), "manifests", top["digest"])
        if len(children) > MAX_INDEX_ENTRIES:
            raise LayoutError(f"the index has {len(children)} entries; at most {MAX_INDEX_ENTRIES}")
        for child in children:
            descriptor = _descriptor(child, top["digest"])
            if descriptor["mediaType"] not in _MANIFEST_TYPES:
                raise LayoutError(f"the index holds a {descriptor['mediaType']!r}")
            platform = _take_manifest(untrusted, dest, descriptor)
            if platform in found:
                raise LayoutError(f"the index holds two images for {platform}")
            found[platform] = descriptor
    elif top["mediaType"] in _MANIFEST_TYPES:
        found[_take_manifest(untrusted, dest, top)] = top
    else:
        raise LayoutError(f"the layout holds a {top['mediaType']!r}")
    missing = [p for p in platforms if p not in found]
    if missing:
        raise LayoutError(f"the build produced no image for {', '.join(missing)}")
    extra = [p for p in found if p not in platforms]
    if extra:
        raise LayoutError(
            f"the build produced an image for {', '.join(extra)}, which was not asked for"
        )
    if len(platforms) > 1:
        manifests = [
            {
                "mediaType": found[p]["mediaType"],
                "digest": found[p]["digest"],
                "size": found[p]["size"],
                "platform": _platform_fields(p),
            }
            for p in platforms
        ]
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": _OCI_INDEX, "manifests": manifests},
            separators=(",", ":"),
        ).encode()
        top = {"mediaType": _OCI_INDEX, **_write_blob(dest, index)}
    else:
        top = {key: found[platforms[0]][key] for key in ("mediaType", "digest", "size")}
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    named = {**top, "annotations": {"org.opencontainers.image.ref.name": REF_NAME}}
    (dest / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [named]}, separators=(",", ":"))
    )
    return LayoutImage(
        path=dest,
        digest=top["digest"],
        is_list=top["mediaType"] in _INDEX_TYPES,
        platforms={p: found[p]["digest"] for p in platforms},
    )


def _entries(root: Path) -> list[dict[str, Any]]:
    index = _load_json(_read_file(root, root / "index.json", MAX_MANIFEST_BYTES), "index.json")
    entries = _list(index, "manifests", "index.json")
    if len(entries) > MAX_INDEX_ENTRIES:
        raise LayoutError(f"the layout names {len(entries)} images; at most {MAX_INDEX_ENTRIES}")
    return entries


def _named(entries: list[dict[str, Any]], name: str) -> dict[str, Any]:
    matches = [e for e in entries if _ref_name(e) == name]
    if len(matches) != 1:
        raise LayoutError(f"the layout names {len(matches)} images called {name!r}")
    return _descriptor(matches[0], "index.json")


def _take_manifest(root: Path, dest: Path, descriptor: dict[str, Any]) -> str:
    """Copy one image (manifest, config, layers); returns its platform from its config."""
    data = _blob(root, dest, descriptor["digest"], descriptor["size"], MAX_MANIFEST_BYTES)
    config = _copy_image(root, dest, _load_json(data, descriptor["digest"]))
    return _platform({"platform": config})


def _write_blob(dest: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (dest / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _platform_fields(platform: str) -> dict[str, str]:
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    return {"architecture": arch, "os": os_, **({"variant": variant} if variant else {})}


def _copy_image(root: Path, dest: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Copy one image's config and layers; returns its config."""
    config = _descriptor(_field(manifest, "config", dict), "manifest")
    config_doc = _load_json(
        _blob(root, dest, config["digest"], config["size"], MAX_MANIFEST_BYTES), "config"
    )
    for layer in _list(manifest, "layers", "manifest"):
        descriptor = _descriptor(layer, "manifest")
        _blob(root, dest, descriptor["digest"], descriptor["size"], None)
    return config_doc


def _blob(root: Path, dest: Path | None, digest: str, size: int, limit: int | None) -> bytes:
    """Read one blob of the layout at ``root``, refusing links, other sizes and other contents,
    and copy it into ``dest`` (unless ``None``: an index the trusted side replaces with its own).
    Returns the bytes of small blobs (``limit`` given), ``b""`` for layers."""
    if limit is not None and size > limit:
        raise LayoutError(f"blob {digest} is {size} bytes; at most {limit}")
    hex_ = digest.split(":", 1)[1]
    target = dest / "blobs" / "sha256" / hex_ if dest is not None else None
    if target is not None and target.exists():  # a layer two platforms share
        return target.read_bytes() if limit is not None else b""
    hasher = hashlib.sha256()
    kept = bytearray()
    read = 0
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(os.fdopen(_open(root, root / "blobs" / "sha256" / hex_), "rb"))
        out = stack.enter_context(target.open("xb")) if target is not None else None
        try:
            while chunk := source.read(1 << 20):
                read += len(chunk)
                if read > size:
                    break
                hasher.update(chunk)
                if out is not None:
                    out.write(chunk)
                if limit is not None:
                    kept += chunk
            if read != size or "sha256:" + hasher.hexdigest() != digest:
                raise LayoutError(
                    f"blob {digest} in the build's layout does not match its descriptor"
                )
        except BaseException:
            if target is not None:
                target.unlink(missing_ok=True)
            raise
    return bytes(kept)


def _open(root: Path, path: Path) -> int:
    """Open ``path`` for reading: a regular file, reached without any symlink below ``root``."""
    try:
        inside = path.parent.resolve(strict=True).is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise LayoutError(f"{path.name} of the build's layout is not inside it (a symlink?)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LayoutError(f"{path.name} in the build's layout is a symlink") from None
        raise LayoutError(
            f"cannot read {path.name} of the build's layout: {exc.strerror}"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LayoutError(f"{path.name} in the build's layout is not a regular file")
    return fd


def _read_file(root: Path, path: Path, limit: int) -> bytes:
    with os.fdopen(_open(root, path), "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LayoutError(f"{path.name} of the build's layout is larger than {limit} bytes")
    return data


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise LayoutError(f"{what} in the build's layout is not JSON") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{what} in the build's layout is not a JSON object")
    return doc


def _field(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind):
        raise LayoutError(f"the build's layout has no valid {key!r}")
    return value


def _list(doc: dict[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    items = doc.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise LayoutError(f"{what} in the build's layout has no valid {key!r} list")
    return items


def _descriptor(doc: dict[str, Any], what: str) -> dict[str, Any]:
    digest, size, media = doc.get("digest"), doc.get("size"), doc.get("mediaType")
    if not (isinstance(digest, str) and _DIGEST.fullmatch(digest)):
        raise LayoutError(f"{what} in the build's layout names a bad digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise LayoutError(f"{what} in the build's layout names a bad size")
    if not isinstance(media, str):
        media = ""
    return {"digest": digest, "size": size, "mediaType": media}


def _ref_name(entry: dict[str, Any]) -> str | None:
    annotations = entry.get("annotations")
    if isinstance(annotations, dict):
        name = annotations.get("org.opencontainers.image.ref.name")
        return name if isinstance(name, str) else None
    return None


def _platform(entry: dict[str, Any]) -> str:
    platform = entry.get("platform")
    if not isinstance(platform, dict):
        return "unknown"
    parts = [platform.get("os"), platform.get("architecture"), platform.get("variant")]
    return "/".join(p for p in parts if isinstance(p, str) and p)
