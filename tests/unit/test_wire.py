"""Registry JSON read as models (image_builder.wire): good documents read, extra keys kept, and
a malformed one refused in one line that names the field and the registry object, without
repeating what the registry sent."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

import image_builder
from image_builder import wire
from image_builder.oci import Reference
from image_builder.registry import OCI_INDEX, OCI_MANIFEST, Manifest, RegistryError, sha256_digest
from image_builder.signing.cosign import (
    SIMPLE_SIGNING,
    check_payload,
    payload,
    signature_tag,
    verify_digest,
)
from image_builder.signing.layers import append_layer, read_layers
from tests.support.mock_registry import DistributionApi, mock_registry

ONE, TWO = "sha256:" + "1" * 64, "sha256:" + "2" * 64
HOSTILE = "\x1b[31mEVIL"  # a value a registry could send to paint the log


def descriptor(**changes: object) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": ONE, "size": 7}
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


def problem(model: type[wire.M], document: object, *, max_entries: int | None = None) -> str:
    with pytest.raises(wire.WireError) as caught:
        wire.parse(model, document, what="the manifest", max_entries=max_entries)
    assert caught.value.exit_code == 1
    message = str(caught.value)
    assert "\n" not in message
    assert "EVIL" not in message
    return message


# --- descriptors ---------------------------------------------------------------------------------


def test_a_descriptor_reads_and_keeps_keys_it_does_not_know() -> None:
    document = descriptor(
        annotations={"org.opencontainers.image.ref.name": "v1"},
        platform={"os": "linux", "architecture": "arm64", "variant": "v8", "os.features": ["x"]},
        urls=["https://mirror.example/blob"],
    )
    found = wire.parse(wire.Descriptor, document, what="the entry")
    assert (found.media_type, found.digest, found.size) == (OCI_MANIFEST, ONE, 7)
    assert found.annotations == {"org.opencontainers.image.ref.name": "v1"}
    assert found.platform is not None
    assert str(found.platform) == "linux/arm64/v8"
    assert found.document() == document  # written back as it came, extra keys and all


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (descriptor(digest=None), "the manifest has no digest"),
        (descriptor(size=None), "the manifest has no size"),
        (descriptor(mediaType=None), "the manifest has no mediaType"),
        (descriptor(digest=HOSTILE), "the manifest's digest is not a sha256 digest"),
        (descriptor(digest=ONE + "\n"), "the manifest's digest is not a sha256 digest"),
        (descriptor(digest=5), "the manifest's digest is not a string"),
        (descriptor(size="7"), "the manifest's size is not a whole number"),
        (descriptor(size=True), "the manifest's size is not a whole number"),
        (descriptor(size=7.0), "the manifest's size is not a whole number"),
        (descriptor(size=-1), "the manifest's size is negative"),
        (descriptor(annotations=[HOSTILE]), "the manifest's annotations is not a JSON object"),
        (
            descriptor(annotations={"k": 1}),
            "the manifest's annotations has a value that is not a string",
        ),
        (
            descriptor(annotations={HOSTILE: 1}),
            "the manifest's annotations has a value that is not a string",
        ),
        (descriptor(platform="linux"), "the manifest's platform is not a JSON object"),
        (descriptor(platform={"os": "linux"}), "the manifest's platform has no architecture"),
        (HOSTILE, "the manifest is not a JSON object"),
    ],
)
def test_a_malformed_descriptor_names_the_field(document: object, message: str) -> None:
    assert problem(wire.Descriptor, document) == message


def test_null_annotations_read_as_none_given() -> None:
    assert wire.parse(wire.Descriptor, descriptor(annotations=None), what="x").annotations == {}
    found = wire.parse(wire.Descriptor, {**descriptor(), "annotations": None}, what="x")
    assert found.annotations == {}


# --- image manifests and indexes -----------------------------------------------------------------


def test_an_image_manifest_reads() -> None:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(digest=TWO, mediaType="application/vnd.oci.image.layer.v1.tar")],
        "annotations": {"org.opencontainers.image.base.digest": ONE},
    }
    found = wire.parse(wire.ImageManifest, document, what="the manifest")
    assert found.config.digest == ONE
    assert [layer.digest for layer in found.layers] == [TWO]
    assert found.annotations["org.opencontainers.image.base.digest"] == ONE


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"layers": []}, "the manifest has no config"),
        ({"config": descriptor()}, "the manifest has no layers"),
        ({"config": descriptor(), "layers": {"0": 1}}, "the manifest's layers is not a list"),
        (
            {"config": descriptor(), "layers": [descriptor(), descriptor(digest=None)]},
            "the manifest's layers[1] has no digest",
        ),
        (
            {"config": descriptor(), "layers": [[descriptor()]]},
            "the manifest's layers[0] is not a JSON object",
        ),
        ({"config": descriptor(size=None), "layers": []}, "the manifest's config has no size"),
        (
            {"config": descriptor(), "layers": [descriptor()] * 3},
            "the manifest lists 3 layers, more than max-manifest-entries (2)",
        ),
    ],
)
def test_a_malformed_image_manifest_names_the_field(document: object, message: str) -> None:
    assert problem(wire.ImageManifest, document, max_entries=2) == message


def test_an_index_reads_its_entries() -> None:
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(platform={"os": "linux", "architecture": "amd64"}),
            descriptor(digest=TWO),  # no platform: an attestation manifest, say
        ],
    }
    found = wire.parse(wire.ImageIndex, document, what="the index")
    assert [(m.digest, str(m.platform or "")) for m in found.manifests] == [
        (ONE, "linux/amd64"),
        (TWO, ""),
    ]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({}, "the manifest has no manifests"),
        ({"manifests": None}, "the manifest's manifests is not a list"),
        ({"manifests": [HOSTILE]}, "the manifest's manifests[0] is not a JSON object"),
        (
            {"manifests": [descriptor(platform={"os": ["linux"], "architecture": "x"})]},
            "the manifest's manifests[0].platform.os is not a string",
        ),
        (
            {"manifests": [descriptor()] * 3},
            "the manifest lists 3 manifests, more than max-manifest-entries (2)",
        ),
    ],
)
def test_a_malformed_index_names_the_field(document: object, message: str) -> None:
    assert problem(wire.ImageIndex, document, max_entries=2) == message


def test_a_manifest_names_the_registry_object() -> None:
    where = "127.0.0.1:5000/team/app@" + ONE
    bad = {"config": descriptor(), "layers": [descriptor(digest=None)]}
    manifest = Manifest(digest=ONE, media_type=OCI_MANIFEST, data=json.dumps(bad).encode())
    with pytest.raises(RegistryError) as caught:
        manifest.image(where=where)
    assert str(caught.value) == f"{where}: the manifest's layers[0] has no digest"
    index = Manifest(
        digest=ONE,
        media_type=OCI_INDEX,
        data=json.dumps({"manifests": [descriptor(size="7")]}).encode(),
    )
    with pytest.raises(RegistryError) as caught:
        index.entries(64, where=where)
    assert (
        str(caught.value)
        == f"{where} has a malformed entry: manifests[0].size is not a whole number"
    )
    assert manifest.entries(64) == ()  # an image lists no manifests


# --- cosign: signature manifests, annotations, payloads -------------------------------------------


def test_a_signature_manifest_keeps_only_its_descriptors() -> None:
    """A planted entry must not stop signing: it is dropped, not refused."""
    kept = descriptor(mediaType=SIMPLE_SIGNING, annotations={wire.SIGNATURE_ANNOTATION: "c2ln"})
    document = {
        "config": descriptor(),
        "layers": [HOSTILE, descriptor(digest=None), descriptor(size=True), {"x": [1]}, kept],
    }
    found = wire.parse(wire.SignatureManifest, document, what="the manifest")
    assert [layer.document() for layer in found.layers] == [kept]
    assert wire.parse(wire.SignatureManifest, {"layers": None}, what="m").layers == ()
    assert wire.parse(wire.SignatureManifest, {}, what="m").layers == ()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"layers": HOSTILE}, "the manifest's layers is not a list"),
        (
            {"layers": [HOSTILE] * 3},
            "the manifest lists 3 layers, more than max-manifest-entries (2)",
        ),
    ],
)
def test_a_signature_manifest_without_a_list_of_layers_is_refused(
    document: object, message: str
) -> None:
    assert problem(wire.SignatureManifest, document, max_entries=2) == message


def test_a_signature_layers_annotations() -> None:
    found = wire.parse(
        wire.SignatureAnnotations,
        {wire.SIGNATURE_ANNOTATION: "c2ln", "dev.sigstore.cosign/bundle": "{}"},
        what="the annotations",
    )
    assert found.signature == "c2ln"
    with pytest.raises(wire.WireError) as caught:
        wire.parse(wire.SignatureAnnotations, {"other": "x"}, what="the layer's annotations")
    assert str(caught.value) == (
        "the layer's annotations has no dev.cosignproject.cosign/signature"
    )


def test_a_simple_signing_payload_reads() -> None:
    found = wire.parse(wire.SimpleSigning, payload("r.example/a", ONE, {"ref": "v1"}), what="p")
    assert (found.identity, found.digest) == ("r.example/a", ONE)
    assert found.critical.type == "cosign container image signature"
    assert found.optional == {"ref": "v1"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "the payload is not JSON"),
        (b"[]", "the payload is not a JSON object"),
        (b'{"critical": {}}', "the payload's critical has no identity"),
        (
            b'{"critical": {"identity": {"docker-reference": "r/a"}, "type": "t",'
            b' "image": {"docker-manifest-digest": 5}}}',
            "the payload's critical.image.docker-manifest-digest is not a string",
        ),
        (
            b'{"critical": {"identity": [], "type": "t", "image": {}}}',
            "the payload's critical.identity is not a JSON object",
        ),
        (
            b'{"critical": {"identity": {"docker-reference": "r/a"},'
            b' "image": {"docker-manifest-digest": "d"}}}',
            "the payload's critical has no type",
        ),
        (b"[" * 5000 + b"]" * 5000, "the payload is not JSON"),
    ],
)
def test_a_malformed_payload_names_the_field(body: bytes, message: str) -> None:
    with pytest.raises(wire.WireError) as caught:
        wire.parse(wire.SimpleSigning, body, what="the payload")
    assert str(caught.value) == message
    assert check_payload(body, "r/a", ONE) == "malformed payload"


# --- through the registry client --------------------------------------------------------------------


def registry_holding(manifest: dict[str, Any], blobs: dict[str, bytes]) -> Any:
    body = json.dumps(manifest).encode()

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if "/manifests/" in path:
            return httpx.Response(200, content=body, headers={"content-type": OCI_MANIFEST})
        digest = path.rsplit("/", 1)[-1]
        if digest in blobs:
            return httpx.Response(200, content=blobs[digest])
        return httpx.Response(404, json={"errors": []})

    return mock_registry(answer)


def test_a_planted_layer_does_not_hide_a_good_signature() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = payload("r.example/team/app", ONE)
    signature = base64.b64encode(key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()
    good = descriptor(
        mediaType=SIMPLE_SIGNING,
        digest=sha256_digest(body),
        size=len(body),
        annotations={wire.SIGNATURE_ANNOTATION: signature},
    )
    planted = [
        descriptor(mediaType=SIMPLE_SIGNING, digest=None),
        descriptor(mediaType=SIMPLE_SIGNING, annotations={"x": "y"}),  # no signature
        HOSTILE,
    ]
    registry = registry_holding(
        {"config": descriptor(), "layers": [*planted, good]}, {sha256_digest(body): body}
    )
    repo = Reference(host="r.example", repository="team/app")
    layers = read_layers(registry, repo.with_tag(signature_tag(ONE)))
    assert len(layers) == 2  # the entry without a digest and the string are dropped
    check = verify_digest(registry, repo, ONE, key.public_key())
    assert check.ok, check.problem
    alone = registry_holding({"layers": planted}, {})
    check = verify_digest(alone, repo, ONE, key.public_key())
    assert (check.ok, check.problem) == (False, "malformed signature entry")


def test_a_signature_tag_without_a_list_of_layers_is_a_registry_error() -> None:
    registry = registry_holding({"layers": {"0": HOSTILE}}, {})
    tag = Reference(host="r.example", repository="a", tag=signature_tag(ONE))
    with pytest.raises(RegistryError) as caught:
        read_layers(registry, tag)
    assert str(caught.value) == (
        f"{tag} is not a signature or attestation manifest: its layers are not a list"
    )
    registry = registry_holding({"layers": [descriptor()] * 65}, {})
    with pytest.raises(RegistryError) as caught:
        read_layers(registry, tag)
    assert str(caught.value) == (
        f"{tag} lists 65 layers, more than max-manifest-entries (64); refusing to read them"
    )


# --- off the path of `image-builder tags` ----------------------------------------------------------

PACKAGE = Path(image_builder.__file__).parent


def _module_level_imports(name: str) -> set[str]:
    """What importing ``name`` imports at once: its top-level imports (not those in functions,
    nor those kept for the type checker), each with the packages above it."""
    path = PACKAGE.joinpath(*name.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    out: set[str] = set()
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return out


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def test_the_wire_models_are_off_the_path_of_image_builder_tags() -> None:
    """`image-builder tags` reads no registry: what it imports at start-up reaches neither the
    models nor the registry client nor an HTTP or crypto library."""
    reached: set[str] = set()
    todo = ["image_builder.cli", "image_builder.commands.tags"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        if name.startswith("image_builder.") and _is_module(name):
            todo += sorted(_module_level_imports(name))
    assert "image_builder.config" in reached  # the walk follows the path
    for heavy in ("image_builder.wire", "image_builder.registry", "httpx", "cryptography", "jwt"):
        assert heavy not in reached


def test_a_layer_this_tool_cannot_read_is_written_back_unchanged() -> None:
    """Another tool's layer may lack what ours have (a size, string annotations, a platform's
    os): it is not read, but adding our signature must not erase it. A planted entry that names
    no blob is dropped."""
    api = DistributionApi(host="r.example")
    registry = mock_registry(api)
    tag = Reference(host="r.example", repository="team/app", tag=signature_tag(ONE))
    foreign = [
        {"mediaType": "application/x.other", "digest": "sha256:" + "c" * 64},  # no size
        {**descriptor(), "annotations": {"count": 3}},  # an annotation that is no string
        {**descriptor(digest="sha256:" + "d" * 64), "platform": {"architecture": "arm64"}},
    ]
    planted = [{"mediaType": SIMPLE_SIGNING, "size": 1}, "junk"]
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": descriptor()}
    registry.put_manifest(
        tag, json.dumps({**manifest, "layers": [*foreign, *planted]}).encode(), OCI_MANIFEST
    )
    append_layer(
        registry,
        tag,
        b"our payload",
        media_type=SIMPLE_SIGNING,
        annotations={wire.SIGNATURE_ANNOTATION: "c2ln"},
        sleep=lambda seconds: None,
    )
    layers = json.loads(registry.get_manifest(tag).data)["layers"]
    assert layers[:3] == foreign
    assert [layer["digest"] for layer in layers[3:]] == [sha256_digest(b"our payload")]
    assert [layer.digest for layer in read_layers(registry, tag)] == [sha256_digest(b"our payload")]
