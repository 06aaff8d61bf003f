"""The local backend (``backends/local.py``) over fakes of everything it is given: an engine, a
publisher, signers, and the project's own registry client talking to registries in memory. No
process, no socket. What it reports is checked against what the fakes hold, field by field."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import pytest

from image_builder import proc
from image_builder.backends.local import SignerFactory, check_registries, execute, sign_all
from image_builder.engines import Engine
from image_builder.errors import RuntimeFailure
from image_builder.plan import BuildPlan
from image_builder.publish import Publisher
from image_builder.report import (
    AttestationRef,
    BuildReport,
    FailedImage,
    PlatformDigest,
    SignerInfo,
    SigningError,
)
from image_builder.reporter import Reporter
from image_builder.signing import Signer
from tests.support.fakes import (
    DIGEST,
    FakeAttester,
    FakeEngine,
    FakePublisher,
    FakeSigner,
    MemoryRegistry,
)
from tests.support.mock_registry import RETRY_AT_ONCE, mock_registry
from tests.support.plans import plan

A = "a.example:5000/p/team/app"
B = "b.example:5000/p/team/app"
TWO = "registry: [a.example:5000/p, b.example:5000/p]\n"
SIGNERS = """\
sign-config:
  enabled-signers:
    '*': [first, second]
  signers:
    - {name: first, type: cosign, config: {private-key: first.pem}}
    - {name: second, type: cosign, config: {private-key: second.pem}}
"""


class Backend:
    """One build's collaborators, all fakes, and a way to run the plan with them."""

    def __init__(self, *signers: FakeSigner) -> None:
        self.memory = MemoryRegistry()
        self.engine = FakeEngine()
        self.publisher = FakePublisher(self.memory)
        self.signers = {s.name: s for s in signers}
        self.asked: list[str] = []  # the signers the factory was asked for, in order
        self.err = io.StringIO()

    def signer(self, name: str) -> Signer:
        self.asked.append(name)
        return self.signers[name]

    def run(self, built: BuildPlan, *, atomic: bool = True, sign: bool = True) -> BuildReport:
        # Typed as the protocols execute() takes: mypy checks the fakes implement them fully.
        engine: Engine = self.engine
        publisher: Publisher = self.publisher
        factory: SignerFactory = self.signer
        return execute(
            built,
            engine,
            publisher,
            Reporter(out=io.StringIO(), err=self.err, env={}),
            registry=mock_registry(self.memory, retry=RETRY_AT_ONCE),
            signers=factory,
            sign=sign,
            atomic=atomic,
        )

    def holding(self) -> set[str]:
        """Every tag in the registries that holds the built image."""
        return {
            f"{name}:{tag}" for (name, tag), digest in self.memory.tags.items() if digest == DIGEST
        }


def test_a_build_pushed_everywhere_and_signed_reports_exactly_that() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    report = backend.run(plan(TWO + SIGNERS))
    assert report == BuildReport(
        status="Succeeded",
        pushed=True,
        signed=True,
        image_name="team/app",
        images_list=[f"{A}:v1", f"{A}:latest", f"{B}:v1", f"{B}:latest"],
        digest=DIGEST,
        tags=["v1", "latest"],
        repository_path="a.example:5000/p/",
        architectures=["linux/amd64"],
        platforms=["linux/amd64"],
        stored_in=[f"{A}@{DIGEST}", f"{B}@{DIGEST}"],
        publish_mode="atomic",
        signed_by=["first", "second"],
        manifests=[PlatformDigest(platform="linux/amd64", digest=DIGEST)],
        signers=[SignerInfo(name="first", type="cosign"), SignerInfo(name="second", type="cosign")],
    )
    assert backend.holding() == {f"{A}:v1", f"{A}:latest", f"{B}:v1", f"{B}:latest"}
    for signer in backend.signers.values():
        assert len(signer.signed) == 1  # one call, every repository in it
        assert [(str(t.reference), t.tags) for t in signer.signed[0]] == [
            (f"{A}@{DIGEST}", ("v1", "latest")),
            (f"{B}@{DIGEST}", ("v1", "latest")),
        ]
    assert backend.engine.builds == 1
    assert backend.engine.cleaned[0] is not None  # the built image, cleaned up
    assert backend.engine.tagged == []


def test_a_push_failing_on_one_registry_names_exactly_what_landed_where() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    backend.publisher.fail = ("b.example:5000",)
    report = backend.run(plan(TWO + SIGNERS), atomic=False)
    why = f"push to {B} failed: connection refused"
    assert (report.status, report.pushed, report.signed) == ("Failed", False, False)
    assert report.images_list == [f"{A}:v1", f"{A}:latest"]
    assert report.stored_in == [f"{A}@{DIGEST}"]
    assert report.failed_images == [
        FailedImage(image=f"{B}:v1", error=why),
        FailedImage(image=f"{B}:latest", error=why),
    ]
    assert report.error == (
        f"1 of 2 repository(ies) did not receive the image: {B} ({why}); "
        "2 tag(s) moved in the other repositories (publish-mode: best-effort)"
    )
    assert backend.holding() == {f"{A}:v1", f"{A}:latest"}
    assert backend.asked == []  # nothing is signed unless everything was pushed
    assert report.signed_by == []


def test_atomic_publishing_with_one_registry_failing_moves_no_tag_and_says_where_it_is() -> None:
    backend = Backend()
    backend.publisher.fail = ("b.example:5000",)
    report = backend.run(plan(TWO))
    assert (report.status, report.pushed, report.images_list) == ("Failed", False, [])
    assert report.stored_in == [f"{A}@{DIGEST}"]  # there by digest, but no tag points at it
    assert backend.memory.tags == {}
    assert [f.image for f in report.failed_images] == [
        f"{A}:v1",
        f"{A}:latest",
        f"{B}:v1",
        f"{B}:latest",
    ]


def test_a_failing_signer_leaves_the_image_pushed_and_unsigned_and_the_other_signs() -> None:
    failing = FakeSigner("first", fail=RuntimeFailure("the key file is unreadable"))
    backend = Backend(failing, FakeSigner("second"))
    report = backend.run(plan(TWO + SIGNERS))
    images = f"{A}:v1, {A}:latest, {B}:v1, {B}:latest"
    error = f"signer first: the key file is unreadable (images: {images})"
    assert (report.status, report.pushed, report.signed) == ("Failed", True, False)
    assert report.signed_by == ["second"]
    assert report.signing_errors == [SigningError(signer="first", error=error)]
    assert report.error == f"{error}; the images are pushed but not signed"
    assert len(backend.signers["second"].signed) == 1
    assert backend.holding() == {f"{A}:v1", f"{A}:latest", f"{B}:v1", f"{B}:latest"}


def test_without_sign_a_pushed_build_is_left_for_sign_from_report() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    report = backend.run(plan(TWO + SIGNERS), sign=False)
    assert (report.status, report.pushed, report.signed, report.signed_by) == (
        "Succeeded",
        True,
        False,
        [],
    )
    assert backend.asked == []


def test_a_failed_build_pushes_nothing_and_still_cleans_up() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    backend.engine.fail = RuntimeFailure("RUN make: exit status 2")
    report = backend.run(plan(TWO + SIGNERS))
    assert (report.status, report.pushed, report.signed, report.digest) == (
        "Failed",
        False,
        False,
        None,
    )
    assert report.error == "build failed: RUN make: exit status 2"
    assert {f.error for f in report.failed_images} == {"not attempted"}
    assert backend.memory.events == []
    assert backend.engine.cleaned == [None]
    assert backend.asked == []


def test_a_no_push_build_keeps_the_image_under_the_planned_names() -> None:
    backend = Backend()
    report = backend.run(plan(TWO, push=False))
    assert backend.engine.tagged == [(f"{A}:v1", f"{A}:latest", f"{B}:v1", f"{B}:latest")]
    assert (report.status, report.pushed, report.publish_mode, report.images_list) == (
        "Succeeded",
        False,
        None,
        [],
    )
    assert backend.memory.events == []
    assert "--no-push: nothing was pushed" in backend.err.getvalue()


def test_a_no_push_build_whose_image_cannot_be_kept_fails() -> None:
    backend = Backend()
    backend.engine.tag_fails = RuntimeFailure("buildah tag: storage is full")
    report = backend.run(plan(TWO, push=False))
    assert (report.status, report.pushed) == ("Failed", False)
    assert report.error == "--no-push: keeping the image failed: buildah tag: storage is full"


def test_a_signal_during_the_build_cancels_it_and_pushes_nothing() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    backend.engine.during_build = lambda: proc.CHILDREN.stop_all("SIGTERM")
    backend.engine.fail = proc.Cancelled("buildah was stopped by SIGTERM")
    report = backend.run(plan(TWO + SIGNERS))
    assert (report.status, report.pushed, report.signed) == ("Cancelled", False, False)
    assert report.error == "cancelled (SIGTERM); build failed: buildah was stopped by SIGTERM"
    assert backend.memory.events == []
    assert backend.asked == []


def test_a_signal_after_the_last_tag_moved_reports_pushed_and_leaves_signing() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    backend.memory.after_put = lambda name, tag: (
        tag == "latest" and proc.CHILDREN.stop_all("SIGINT")
    )
    report = backend.run(plan("registry: a.example:5000/p\n" + SIGNERS))
    assert (report.status, report.pushed, report.signed) == ("Cancelled", True, False)
    assert report.images_list == [f"{A}:v1", f"{A}:latest"]
    assert report.error == "cancelled (SIGINT) before signing; the image is pushed, unsigned"
    assert backend.asked == []


def test_a_signal_between_two_tags_reports_the_one_that_moved() -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    backend.memory.after_put = lambda name, tag: proc.CHILDREN.stop_all("SIGTERM")
    report = backend.run(plan("registry: a.example:5000/p\n" + SIGNERS))
    assert (report.status, report.pushed, report.signed) == ("Cancelled", False, False)
    assert report.images_list == [f"{A}:v1"]
    assert backend.holding() == {f"{A}:v1"}
    assert backend.asked == []


Scenario = Callable[[Backend], None]


def _stop_in_phase_1(backend: Backend) -> None:
    backend.publisher.during_push = lambda: proc.CHILDREN.stop_all("SIGTERM")


def _refuse_one_tag(backend: Backend) -> None:
    backend.memory.refuse_put.add(f"{B}:latest")


def _fail_one_push(backend: Backend) -> None:
    backend.publisher.fail = ("a.example:5000",)


def _fail_a_signer(backend: Backend) -> None:
    backend.signers["second"].fail = RuntimeFailure("no")


def _stop_after_one_tag(backend: Backend) -> None:
    backend.memory.after_put = lambda name, tag: proc.CHILDREN.stop_all("SIGTERM")


def _fail_the_build(backend: Backend) -> None:
    backend.engine.fail = RuntimeFailure("RUN false: exit status 1")


def _nothing(backend: Backend) -> None:
    pass


@pytest.mark.parametrize("atomic", [True, False], ids=["atomic", "best-effort"])
@pytest.mark.parametrize(
    "scenario",
    [
        _nothing,
        _stop_in_phase_1,
        _refuse_one_tag,
        _fail_one_push,
        _fail_a_signer,
        _stop_after_one_tag,
        _fail_the_build,
    ],
)
def test_the_report_vouches_for_nothing_the_registries_do_not_hold(
    scenario: Scenario, atomic: bool
) -> None:
    backend = Backend(FakeSigner("first"), FakeSigner("second"))
    scenario(backend)
    built = plan(TWO + SIGNERS)
    report = backend.run(built, atomic=atomic)
    planned = {str(r) for r in built.references}
    assert set(report.images_list) == backend.holding()
    assert report.pushed is (backend.holding() == planned)
    signed_all = all(len(s.signed) == 1 and s.fail is None for s in backend.signers.values())
    assert report.signed is (report.pushed and signed_all)
    assert report.signed_by == [n for n, s in backend.signers.items() if s.signed]
    assert (report.status == "Succeeded") is (report.pushed and report.signed)


def test_check_registries_names_each_refusing_destination_and_asks_a_host_once() -> None:
    memory = MemoryRegistry()
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        host = request.url.netloc.decode()
        asked.append(host)
        if host.startswith("127.0.0.1"):
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return memory(request)

    def check(config: str) -> dict[str, str]:
        reporter = Reporter(out=io.StringIO(), err=io.StringIO(), env={})
        refused = check_registries(plan(config), mock_registry(answer), reporter)
        return {d.name: why for d, why in refused.items()}

    check("registry: 127.0.0.1:5001/a\n")
    one_check = asked.count("127.0.0.1:5001")
    asked.clear()
    refused = check("registry: [127.0.0.1:5001/a, 127.0.0.1:5001/b, ok.example/c]\n")
    assert asked.count("127.0.0.1:5001") == one_check  # not again for the second repository
    assert "ok.example" in asked
    down = "registry 127.0.0.1:5001 is unreachable"
    hint = "check registry in config.yaml, or start it (image-builder registry start --address"
    assert list(refused) == ["127.0.0.1:5001/a/team/app", "127.0.0.1:5001/b/team/app"]
    for why in refused.values():
        assert why.startswith(down), why
        assert why.endswith(f"; {hint} 127.0.0.1:5001)"), why


def test_the_embedded_registry_is_named_without_an_address() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    built = plan("registry: localhost:5000/a\n")
    reporter = Reporter(out=io.StringIO(), err=io.StringIO(), env={})
    refused = check_registries(built, mock_registry(answer), reporter)
    (why,) = refused.values()
    assert why.endswith(
        "; check registry in config.yaml, or start it (image-builder registry start)"
    )


def _pushed_report(backend: Backend) -> BuildReport:
    report = backend.run(plan(TWO), sign=False)
    assert report.pushed, report.error
    return report.model_copy(update={"provenance": {"_type": "https://in-toto.io/Statement/v1"}})


def test_sign_all_stores_the_statement_with_each_attesting_signer() -> None:
    attester = FakeAttester("first")
    backend = Backend(attester, FakeSigner("second"))
    report = sign_all(
        ["first", "second"], _pushed_report(backend), mock_registry(backend.memory), backend.signer
    )
    assert (report.status, report.signed, report.signed_by) == (
        "Succeeded",
        True,
        ["first", "second"],
    )
    assert attester.statements == [b'{"_type":"https://in-toto.io/Statement/v1"}']
    hex_ = DIGEST.removeprefix("sha256:")
    assert report.attestations == [
        AttestationRef(image=f"{A}@{DIGEST}", reference=f"{A}:sha256-{hex_}.att", signer="first"),
        AttestationRef(image=f"{B}@{DIGEST}", reference=f"{B}:sha256-{hex_}.att", signer="first"),
    ]


def test_sign_all_with_an_attestation_that_fails_is_signed_but_failed() -> None:
    attester = FakeAttester("first", attest_fails=RuntimeFailure("HTTP 403 DENIED"))
    backend = Backend(attester)
    report = sign_all(
        ["first"], _pushed_report(backend), mock_registry(backend.memory), backend.signer
    )
    images = f"{A}:v1, {A}:latest, {B}:v1, {B}:latest"
    error = f"signer first did not store the provenance: HTTP 403 DENIED (images: {images})"
    assert (report.status, report.signed, report.attestations) == ("Failed", True, [])
    assert report.signing_errors == [SigningError(signer="first", error=error)]
    assert report.error == f"{error}; the images are signed"


def test_sign_all_signs_nothing_it_cannot_read_back() -> None:
    backend = Backend(FakeSigner("first"))
    report = _pushed_report(backend)
    backend.memory.manifests.clear()  # the registry lost the image since
    signed = sign_all(["first"], report, mock_registry(backend.memory), backend.signer)
    assert (signed.status, signed.signed, signed.signed_by) == ("Failed", False, [])
    assert str(signed.error).startswith("cannot read back what was pushed to sign it: ")
    assert backend.asked == []


def test_sign_all_signs_the_repositories_that_hold_the_digest_untagged_too() -> None:
    backend = Backend(FakeSigner("first"))
    report = _pushed_report(backend).model_copy(
        update={"images_list": [f"{A}:v1"], "stored_in": [f"{A}@{DIGEST}", f"{B}@{DIGEST}"]}
    )
    sign_all(["first"], report, mock_registry(backend.memory), backend.signer)
    (targets,) = backend.signers["first"].signed
    assert [(str(t.reference), t.tags) for t in targets] == [
        (f"{A}@{DIGEST}", ("v1",)),
        (f"{B}@{DIGEST}", ()),
    ]
