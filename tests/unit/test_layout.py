"""The OCI layout from the sandbox is hostile data: only what matches its digests is taken."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from image_builder.layout import LayoutError, take

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def blob(root: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def image(root: Path, arch: str) -> dict[str, object]:
    config = blob(root, json.dumps({"os": "linux", "architecture": arch}).encode())
    layer = blob(root, f"layer of {arch}".encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }
    return {"mediaType": OCI_MANIFEST, **blob(root, json.dumps(manifest).encode())}


def layout(root: Path, *arches: str) -> str:
    if len(arches) == 1:
        top = image(root, arches[0])
    else:
        entries = [
            {**image(root, a), "platform": {"os": "linux", "architecture": a}} for a in arches
        ]
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
        top = {"mediaType": OCI_INDEX, **blob(root, json.dumps(index).encode())}
    top["annotations"] = {"org.opencontainers.image.ref.name": "image"}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return str(top["digest"])


def test_the_index_is_written_by_the_trusted_side_in_plan_order(tmp_path: Path) -> None:
    layout(tmp_path / "src", "arm64", "amd64")  # as a build finished them
    taken = take(tmp_path / "src", tmp_path / "dest", ["linux/amd64", "linux/arm64"])
    assert taken.is_list
    assert list(taken.platforms) == ["linux/amd64", "linux/arm64"]
    assert taken.source == f"oci:{tmp_path / 'dest'}:image"
    index = json.loads((tmp_path / "dest" / "blobs" / "sha256" / taken.digest[7:]).read_bytes())
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    assert [m["digest"] for m in index["manifests"]] == list(taken.platforms.values())
    # Read back, the trusted layout gives the very same index: publishing it changes nothing.
    again = take(tmp_path / "dest", tmp_path / "again", ["linux/amd64", "linux/arm64"])
    assert again.digest == taken.digest


def test_an_image_that_was_not_asked_for_is_refused(tmp_path: Path) -> None:
    layout(tmp_path / "src", "amd64", "arm64")
    with pytest.raises(LayoutError) as caught:
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64"])
    assert str(caught.value) == (
        "the build produced an image for linux/arm64, which was not asked for"
    )


def test_a_single_image_knows_its_platform(tmp_path: Path) -> None:
    layout(tmp_path / "src", "arm64")
    taken = take(tmp_path / "src", tmp_path / "dest", ["linux/arm64"])
    assert (taken.is_list, list(taken.platforms)) == (False, ["linux/arm64"])


def test_a_symlinked_blob_is_refused(tmp_path: Path) -> None:
    """The attack: a RUN step that escaped to the build account swaps a layer for a link to a
    key, hoping the publishing side (root) pushes the key as a layer."""
    layout(tmp_path / "src", "amd64")
    key = tmp_path / "cosign.key"
    key.write_text("secret key")
    blobs = tmp_path / "src" / "blobs" / "sha256"
    victim = next(p for p in blobs.iterdir() if p.read_bytes() == b"layer of amd64")
    victim.unlink()
    os.symlink(key, victim)
    with pytest.raises(LayoutError) as caught:
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64"])
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"{victim.name} in the build's layout is a symlink"
    assert not any(
        p.read_bytes() == b"secret key" for p in (tmp_path / "dest" / "blobs" / "sha256").iterdir()
    )


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    layout(tmp_path / "src", "amd64")
    blobs = tmp_path / "src" / "blobs" / "sha256"
    victim = next(p for p in blobs.iterdir() if p.read_bytes() == b"layer of amd64")
    victim.write_bytes(b"layer of amd6X")
    with pytest.raises(LayoutError) as caught:
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64"])
    assert str(caught.value) == (
        f"blob sha256:{victim.name} in the build's layout does not match its descriptor"
    )


def test_a_layout_without_the_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.json").write_text('{"schemaVersion": 2, "manifests": []}')
    with pytest.raises(LayoutError, match="the layout names 0 images called 'image'"):
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64"])


def test_a_symlinked_folder_in_the_layout_is_refused(tmp_path: Path) -> None:
    """A folder of the layout that points elsewhere would make the trusted side read blobs that
    the build never wrote (another build's, say)."""
    layout(tmp_path / "elsewhere", "amd64")
    (tmp_path / "src").mkdir()
    os.symlink(tmp_path / "elsewhere" / "blobs", tmp_path / "src" / "blobs")
    (tmp_path / "src" / "index.json").write_text(
        (tmp_path / "elsewhere" / "index.json").read_text()
    )
    with pytest.raises(LayoutError) as caught:
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64"])
    assert str(caught.value).endswith("of the build's layout is not inside it (a symlink?)")


def test_a_missing_platform_is_refused(tmp_path: Path) -> None:
    layout(tmp_path / "src", "amd64")
    with pytest.raises(LayoutError) as caught:
        take(tmp_path / "src", tmp_path / "dest", ["linux/amd64", "linux/arm64"])
    assert str(caught.value) == "the build produced no image for linux/arm64"
