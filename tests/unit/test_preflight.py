"""The local backend checks every registry before it builds: one that is down or refuses stops
the build with an honest report (atomic), or is left out while the others get the image (best
effort). Publishing says one line per repository. Without processes or network."""

from __future__ import annotations

import io

import httpx
import pytest

from image_builder.backends.local import execute
from image_builder.dockerfile import DockerfileSyntaxError
from image_builder.plan import BuildPlan
from image_builder.registry import RegistryClient
from image_builder.report import BuildReport
from image_builder.reporter import Reporter
from tests.support.fakes import DIGEST, THREE, FakeEngine, FakePublisher, MemoryRegistry
from tests.support.mock_registry import RETRY_AT_ONCE, mock_registry
from tests.support.plans import plan

DOWN = "b.example:5000"
MESSAGE = f"registry {DOWN} is unreachable (connection refused); check registry in config.yaml"


def client(memory: MemoryRegistry, down: str = DOWN) -> RegistryClient:
    def transport(request: httpx.Request) -> httpx.Response:
        if request.url.netloc.decode() == down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return memory(request)

    return mock_registry(transport, retry=RETRY_AT_ONCE)


def run(
    built: BuildPlan, engine: FakeEngine, memory: MemoryRegistry, *, atomic: bool = True
) -> tuple[BuildReport, str]:
    err = io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, env={})
    publisher = FakePublisher(memory)
    report = execute(built, engine, publisher, reporter, registry=client(memory), atomic=atomic)
    return report, err.getvalue()


def test_a_registry_that_is_down_stops_the_build_before_it_starts() -> None:
    memory = MemoryRegistry()
    engine = FakeEngine()
    report, _ = run(plan(THREE), engine, memory)
    assert engine.builds == 0
    assert not memory.events  # nothing pushed anywhere
    assert (report.status, report.pushed, report.digest, report.publish_mode) == (
        "Failed",
        False,
        None,
        None,
    )
    assert report.error == MESSAGE
    errors = {f.image.split("/")[0]: f.error for f in report.failed_images}
    assert errors[DOWN] == MESSAGE
    assert errors["a.example:5000"] == f"not attempted: {DOWN} failed the check before the build"
    assert len(report.failed_images) == 6


def test_best_effort_leaves_the_refusing_registry_out_and_pushes_the_rest() -> None:
    memory = MemoryRegistry()
    engine = FakeEngine()
    report, _ = run(plan(THREE), engine, memory, atomic=False)
    assert engine.builds == 1
    assert not any(DOWN in event for event in memory.events)
    assert sorted(image.split("/")[0] for image in report.images_list) == [
        "a.example:5000",
        "a.example:5000",
        "c.example:5000",
        "c.example:5000",
    ]
    assert {f.error for f in report.failed_images} == {MESSAGE}
    assert report.error is not None
    assert report.error.startswith(f"1 of 3 repository(ies) did not receive the image: {DOWN}")


def test_a_no_push_build_checks_no_registry() -> None:
    memory = MemoryRegistry()
    engine = FakeEngine()
    report, _ = run(plan(THREE, push=False), engine, memory)
    assert engine.builds == 1
    assert engine.tagged == [tuple(str(r) for r in plan(THREE).references)]
    assert report.status == "Succeeded"


def test_one_progress_line_per_repository_and_the_platform_digests() -> None:
    memory = MemoryRegistry()
    err = io.StringIO()
    reporter = Reporter(out=io.StringIO(), err=err, env={})
    built = plan(THREE)
    report = execute(
        built,
        FakeEngine(),
        FakePublisher(memory),
        reporter,
        registry=client(memory, down="none.example"),
    )
    assert report.status == "Succeeded"
    pushed = [line for line in err.getvalue().splitlines() if line.startswith("pushed ")]
    # concurrent pushes: one line each, in any order
    assert sorted(pushed) == sorted(
        f"pushed {d.name}@{DIGEST} (0 blobs, 1 platform)" for d in built.destinations
    )
    assert [(m.platform, m.digest) for m in report.manifests] == [("linux/amd64", DIGEST)]


def test_a_dockerfile_the_engine_cannot_read_is_raised_not_reported() -> None:
    unreadable = FakeEngine(
        fail=DockerfileSyntaxError("Dockerfile line 1: unknown instruction FRUM")
    )
    memory = MemoryRegistry()
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), env={})
    with pytest.raises(DockerfileSyntaxError):
        execute(
            plan(THREE),
            unreadable,
            FakePublisher(memory),
            reporter,
            registry=client(memory, down="none.example"),
        )
