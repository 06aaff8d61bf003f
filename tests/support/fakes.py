"""Fakes of the collaborators the local backend is given, for unit tests without processes or
sockets: an engine (the :class:`~image_builder.engines.Engine` protocol), a publisher (phase 1
without skopeo), signers, and every registry at once in memory, which the project's own
registry client reaches over an httpx mock transport
(:func:`tests.support.mock_registry.mock_registry`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from image_builder.engines import BuiltImage
from image_builder.errors import ImageBuilderError, RuntimeFailure
from image_builder.http import Deadline
from image_builder.layout import LayoutImage
from image_builder.oci import Destination
from image_builder.plan import BuildPlan
from image_builder.publish import Staged
from image_builder.registry import OCI_MANIFEST
from image_builder.signing import SignTarget

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
THREE = "registry: [a.example:5000/p, b.example:5000/p, c.example:5000/p]\n"


class MemoryRegistry:
    """Every registry host at once, in memory: manifests by digest, tags, and hooks to fail or
    race a request. It answers the check before the build (``/v2/`` and a cancelled upload)."""

    def __init__(self) -> None:
        self.manifests: dict[tuple[str, str], bytes] = {}  # (host/repo, digest) → bytes
        self.tags: dict[tuple[str, str], str] = {}  # (host/repo, tag) → digest
        self.events: list[str] = []
        self.after_put: Callable[[str, str], object] = lambda name, tag: None
        self.refuse_put: set[str] = set()  # host/repo:tag answered 403
        self.unavailable: dict[str, int] = {}  # host/repo:tag → 503s still to answer
        self.lose_answer: set[str] = set()  # host/repo:tag whose PUT lands, answered 403
        self.lagging: dict[str, int] = {}  # host/repo:tag → reads that still answer 404

    def store(self, name: str, data: bytes) -> None:
        self.manifests[(name, "sha256:" + hashlib.sha256(data).hexdigest())] = data

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":  # the check before the build
            return httpx.Response(200)
        if request.url.path.endswith("/blobs/uploads/"):
            return httpx.Response(202, headers={"Location": f"{request.url.path}upload-1"})
        if "/blobs/uploads/" in request.url.path and request.method == "DELETE":
            return httpx.Response(204)
        path = request.url.path.removeprefix("/v2/")
        repo, _, target = path.partition("/manifests/")
        name = f"{request.url.netloc.decode()}/{repo}"
        key = f"{name}:{target}"
        if self.unavailable.get(key, 0) > 0:
            self.unavailable[key] -= 1
            return httpx.Response(503)
        if request.method == "PUT":
            if key in self.refuse_put:
                return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "no"}]})
            self.store(name, request.content)
            put = "sha256:" + hashlib.sha256(request.content).hexdigest()
            self.tags[(name, target)] = put
            self.events.append(f"tag {key}")
            self.after_put(name, target)
            if key in self.lose_answer:
                return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "?"}]})
            return httpx.Response(201, headers={"Docker-Content-Digest": put})
        if self.lagging.get(key, 0) > 0:
            self.lagging[key] -= 1
            return httpx.Response(404, json={"errors": []})
        digest = target if target.startswith("sha256:") else self.tags.get((name, target))
        if digest is None or (name, digest) not in self.manifests:
            return httpx.Response(404, json={"errors": []})
        headers = {"Docker-Content-Digest": digest, "Content-Type": OCI_MANIFEST}
        return httpx.Response(200, headers=headers, content=self.manifests[(name, digest)])


class FakePublisher:
    """Phase 1 without skopeo (a :class:`~image_builder.publish.Publisher`): ``fail`` names the
    hosts whose copy fails."""

    def __init__(self, memory: MemoryRegistry, fail: tuple[str, ...] = ()) -> None:
        self.memory = memory
        self.fail = fail
        self.during_push: Callable[[], object] = lambda: None

    def stage(self, image: BuiltImage, *, deadline: Deadline) -> Staged:
        return Staged(source="oci:x", digest=DIGEST, media_type=OCI_MANIFEST, manifest=MANIFEST)

    def push(self, staged: Staged, destination: Destination, *, deadline: Deadline) -> None:
        self.during_push()
        if destination.host in self.fail:
            raise RuntimeFailure(f"push to {destination.name} failed: connection refused")
        self.memory.store(destination.name, staged.manifest)
        self.memory.events.append(f"push {destination.name}")


class FakeEngine:
    """An :class:`~image_builder.engines.Engine` that builds nothing: every build is the image
    :data:`DIGEST`, or raises ``fail``, after ``during_build``. It records what it was asked."""

    def __init__(
        self,
        *,
        fail: ImageBuilderError | None = None,
        tag_fails: ImageBuilderError | None = None,
    ) -> None:
        self.fail = fail
        self.tag_fails = tag_fails
        self.during_build: Callable[[], object] = lambda: None
        self.builds = 0
        self.tagged: list[tuple[str, ...]] = []  # the references of each --no-push build
        self.cleaned: list[BuiltImage | None] = []  # each cleanup, with the image it was given

    def build(self, plan: BuildPlan) -> BuiltImage:
        self.builds += 1
        self.during_build()
        if self.fail is not None:
            raise self.fail
        image = LayoutImage(path=Path("/nowhere"), digest=DIGEST, is_list=False, platforms={})
        return BuiltImage(layout=image, platforms=plan.platforms)

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        if self.tag_fails is not None:
            raise self.tag_fails
        self.tagged.append(references)

    def cleanup(self, image: BuiltImage | None) -> None:
        self.cleaned.append(image)


class FakeSigner:
    """A :class:`~image_builder.signing.Signer`: records each call's targets, or raises
    ``fail``."""

    def __init__(self, name: str, *, fail: ImageBuilderError | None = None) -> None:
        self.name = name
        self.fail = fail
        self.signed: list[list[SignTarget]] = []

    def sign(self, targets: Sequence[SignTarget]) -> None:
        if self.fail is not None:
            raise self.fail
        self.signed.append(list(targets))


class FakeAttester(FakeSigner):
    """A signer that also stores attestations (an :class:`~image_builder.signing.Attester`), at
    ``<repository>:sha256-<hex>.att`` for each digest, or raises ``attest_fails``."""

    def __init__(
        self,
        name: str,
        *,
        fail: ImageBuilderError | None = None,
        attest_fails: ImageBuilderError | None = None,
    ) -> None:
        super().__init__(name, fail=fail)
        self.attest_fails = attest_fails
        self.statements: list[bytes] = []

    def attest(self, targets: Sequence[SignTarget], statement: bytes) -> list[str]:
        if self.attest_fails is not None:
            raise self.attest_fails
        self.statements.append(statement)
        return [f"{t.repository}:{d.replace(':', '-')}.att" for t in targets for d in t.digests]
