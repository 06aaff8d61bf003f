"""Two-phase publishing, without processes: a fake publisher copies into an in-memory registry,
and the project's own registry client moves the tags there over an httpx mock transport."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from image_builder import proc
from image_builder.backends.local import execute
from image_builder.engines import BuiltImage
from image_builder.errors import RuntimeFailure
from image_builder.http import Deadline, RetryPolicy
from image_builder.layout import LayoutImage
from image_builder.oci import Destination, is_loopback, plain_http, split_host
from image_builder.plan import BuildPlan
from image_builder.publish import Staged
from image_builder.registry import OCI_MANIFEST, RegistryClient
from image_builder.report import BuildReport
from image_builder.reporter import Reporter
from image_builder.skopeo import permanent
from tests.unit.test_plan import plan

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
OTHER = "sha256:" + "e" * 64


class MemoryRegistry:
    """Every registry host at once, in memory: manifests by digest, tags, and hooks to fail or
    race a request."""

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
    """Phase 1 without skopeo: ``fail`` names the hosts whose copy fails."""

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
    def __init__(self) -> None:
        self.cleaned = False

    def build(self, plan: BuildPlan) -> BuiltImage:
        image = LayoutImage(path=Path("/nowhere"), digest=DIGEST, is_list=False, platforms={})
        return BuiltImage(layout=image, platforms=plan.platforms)

    def tag(self, image: BuiltImage, references: tuple[str, ...]) -> None:
        raise AssertionError("not a --no-push build")

    def cleanup(self, image: BuiltImage | None) -> None:
        self.cleaned = True


@pytest.fixture
def memory() -> MemoryRegistry:
    return MemoryRegistry()


@pytest.fixture(autouse=True)
def _fresh_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(proc, "CHILDREN", proc._Children())


def client(memory: MemoryRegistry) -> RegistryClient:
    http = httpx.Client(transport=httpx.MockTransport(memory))
    return RegistryClient(
        http=http,
        credentials=lambda host: None,
        plain_http=lambda host: True,
        retry=RetryPolicy(attempts=None, base_delay=0.0, max_delay=0.0, budget=5.0),
    )


THREE = "registry: [a.example:5000/p, b.example:5000/p, c.example:5000/p]\n"


def run(
    memory: MemoryRegistry, built: BuildPlan, publisher: FakePublisher, *, atomic: bool = True
) -> BuildReport:
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), env={})
    return execute(built, FakeEngine(), publisher, reporter, registry=client(memory), atomic=atomic)


def test_content_lands_everywhere_before_any_tag_moves(memory: MemoryRegistry) -> None:
    built = plan(THREE)
    report = run(memory, built, FakePublisher(memory))
    assert report.status == "Succeeded"
    assert report.pushed
    pushes = [i for i, e in enumerate(memory.events) if e.startswith("push")]
    tags = [i for i, e in enumerate(memory.events) if e.startswith("tag")]
    assert (len(pushes), len(tags)) == (3, 6)
    assert max(pushes) < min(tags)
    assert report.images_list == [str(r) for r in built.references]
    assert report.stored_in == [f"{d.name}@{DIGEST}" for d in built.destinations]


def test_atomic_one_registry_down_moves_no_tag_anywhere(memory: MemoryRegistry) -> None:
    built = plan(THREE)
    report = run(memory, built, FakePublisher(memory, fail=("b.example:5000",)))
    assert memory.tags == {}
    assert report.status == "Failed"
    assert not report.pushed
    assert report.images_list == []
    errors = {f.image: f.error for f in report.failed_images}
    assert len(errors) == 6
    assert errors["b.example:5000/p/team/app:v1"].endswith("connection refused")
    assert (
        "no tag moved: b.example:5000/p/team/app did not receive"
        in errors["a.example:5000/p/team/app:v1"]
    )
    assert str(report.error).startswith("1 of 3 repository(ies) did not receive the image")


def test_best_effort_tags_where_the_image_landed(memory: MemoryRegistry) -> None:
    built = plan(THREE)
    report = run(memory, built, FakePublisher(memory, fail=("b.example:5000",)), atomic=False)
    assert sorted(memory.tags) == sorted(
        (f"{h}.example:5000/p/team/app", t) for h in "ac" for t in ("v1", "latest")
    )
    assert len(report.images_list) == 4
    assert report.status == "Failed"


def test_a_tag_moved_by_a_concurrent_build_is_superseded_not_failed(
    memory: MemoryRegistry,
) -> None:
    built = plan("registry: a.example:5000")
    other = b'{"schemaVersion":2,"other":true}'
    moved = "sha256:" + hashlib.sha256(other).hexdigest()

    def race(name: str, tag: str) -> None:
        if tag == "v1":  # the shared default tag: another build moves it right after us
            memory.manifests[(name, moved)] = other
            memory.tags[(name, tag)] = moved

    memory.after_put = race
    report = run(memory, built, FakePublisher(memory))
    assert report.status == "Succeeded"
    assert report.pushed
    assert report.images_list == ["a.example:5000/team/app:latest"]
    superseded = report.superseded_images
    assert [(s.image, s.digest) for s in superseded] == [("a.example:5000/team/app:v1", moved)]
    assert report.failed_images == []


def test_a_refused_tag_does_not_stop_the_next_and_is_named(memory: MemoryRegistry) -> None:
    built = plan("registry: a.example:5000")
    memory.refuse_put.add("a.example:5000/team/app:v1")
    report = run(memory, built, FakePublisher(memory))
    assert memory.tags == {("a.example:5000/team/app", "latest"): DIGEST}
    assert report.images_list == ["a.example:5000/team/app:latest"]
    assert [f.image for f in report.failed_images] == ["a.example:5000/team/app:v1"]
    assert "HTTP 403 DENIED: no" in report.failed_images[0].error
    assert report.error == (
        f"1 of 2 tag(s) were not moved to {DIGEST}: a.example:5000/team/app:v1; the others "
        "were; a rerun moves the rest"
    )


def test_503_bursts_and_a_failed_confirmation_are_retried(memory: MemoryRegistry) -> None:
    built = plan("registry: a.example:5000")
    memory.unavailable = {f"a.example:5000/team/app:{DIGEST}": 6, "a.example:5000/team/app:v1": 5}
    report = run(memory, built, FakePublisher(memory))
    assert report.status == "Succeeded", report.error
    assert memory.unavailable == {
        f"a.example:5000/team/app:{DIGEST}": 0,
        "a.example:5000/team/app:v1": 0,
    }


def test_a_signal_during_phase_1_cancels_before_any_tag(memory: MemoryRegistry) -> None:
    built = plan(THREE)
    publisher = FakePublisher(memory)
    publisher.during_push = lambda: bool(proc.CHILDREN.stop_all("SIGTERM"))
    report = run(memory, built, publisher)
    assert memory.tags == {}
    assert report.status == "Cancelled"
    assert str(report.error).startswith("cancelled (SIGTERM)")


def test_a_put_whose_answer_was_lost_and_a_lagging_read_back_count_as_moved(
    memory: MemoryRegistry,
) -> None:
    built = plan("registry: a.example:5000")
    memory.lose_answer.add("a.example:5000/team/app:v1")
    memory.lagging["a.example:5000/team/app:latest"] = 2  # a replica catching up
    report = run(memory, built, FakePublisher(memory))
    assert report.status == "Succeeded", report.error
    assert report.images_list == [str(r) for r in built.references]
    assert report.superseded_images == []
    assert memory.lagging == {"a.example:5000/team/app:latest": 0}  # both lagging reads came


def test_a_signal_during_phase_2_moves_no_further_tag(memory: MemoryRegistry) -> None:
    built = plan("registry: a.example:5000")
    memory.after_put = lambda name, tag: bool(proc.CHILDREN.stop_all("SIGINT"))
    report = run(memory, built, FakePublisher(memory))
    assert memory.tags == {("a.example:5000/team/app", "v1"): DIGEST}
    assert report.status == "Cancelled"
    assert report.images_list == ["a.example:5000/team/app:v1"]
    assert [(f.image, f.error) for f in report.failed_images] == [
        ("a.example:5000/team/app:latest", "image-builder was stopped before it moved")
    ]
    assert report.stored_in == [f"a.example:5000/team/app@{DIGEST}"]


def test_a_signal_in_phase_1_is_reported_with_what_is_stored(memory: MemoryRegistry) -> None:
    built = plan(THREE)
    publisher = FakePublisher(memory)
    publisher.during_push = lambda: bool(proc.CHILDREN.stop_all("SIGTERM"))
    report = run(memory, built, publisher)
    assert report.stored_in == [f"{d.name}@{DIGEST}" for d in built.destinations]
    assert memory.tags == {}
    assert {f.error for f in report.failed_images} == {
        "image-builder was stopped before any tag moved"
    }


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("[::1]:5000", True),
        ("[::1]", True),
        ("::1", True),
        ("[::ffff:127.0.0.1]:5000", True),
        ("[::2]:5000", False),
        ("[::1]x", False),
        ("127.0.0.1:abc", False),
        ("[fe80::1]:5000", False),
        ("10.0.0.1:5000", False),
        ("localhost.evil.example:5000", False),
        ("registry.example:5000", False),
    ],
)
def test_the_one_loopback_rule(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert plain_http(host, ()) is loopback


def test_hosts_split_with_ipv6() -> None:
    assert split_host("[::1]:5000") == ("::1", 5000)
    assert split_host("[::1]") == ("::1", None)
    assert split_host("::1") == ("::1", None)
    assert split_host("r.example:443") == ("r.example", 443)
    assert plain_http("lab:5000", ["lab:5000/path"]) is True
    assert plain_http("lab:5001", ["lab:5000"]) is False


@pytest.mark.parametrize(
    ("message", "final"),
    [
        ("reading manifest: invalid status code from registry 403 (Forbidden)", True),
        ("initiating layer upload to /v2/t/b/blobs/uploads/: StatusCode: 405, Method", True),
        ("requested access to the resource is denied", True),
        ("unauthorized: authentication required", True),
        ("received unexpected HTTP status: 503 Service Unavailable", False),
        ("invalid status code from registry 429 (Too Many Requests)", False),
        ("dial tcp 127.0.0.1:5000: connect: connection refused", False),
    ],
)
def test_permanent_push_failures_are_not_retried(message: str, final: bool) -> None:
    assert permanent(message) is final
