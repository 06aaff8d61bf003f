"""Two-phase publishing, without processes: a fake publisher copies into an in-memory registry,
and the project's own registry client moves the tags there over an httpx mock transport."""

from __future__ import annotations

import hashlib
import io

import pytest

from image_builder import proc
from image_builder.backends.local import execute
from image_builder.oci import is_loopback, plain_http, split_host
from image_builder.plan import BuildPlan
from image_builder.report import BuildReport
from image_builder.reporter import Reporter
from image_builder.skopeo import permanent
from tests.support.fakes import DIGEST, THREE, FakeEngine, FakePublisher, MemoryRegistry
from tests.support.mock_registry import RETRY_AT_ONCE, mock_registry
from tests.support.plans import plan


@pytest.fixture
def memory() -> MemoryRegistry:
    return MemoryRegistry()


def run(
    memory: MemoryRegistry, built: BuildPlan, publisher: FakePublisher, *, atomic: bool = True
) -> BuildReport:
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), env={})
    registry = mock_registry(memory, retry=RETRY_AT_ONCE)
    return execute(built, FakeEngine(), publisher, reporter, registry=registry, atomic=atomic)


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
