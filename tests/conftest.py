from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the same examples every time, so a landing never depends on luck; locally they vary.
settings.register_profile("ci", derandomize=True, max_examples=300, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture(scope="session", autouse=True)
def _private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Each test process (one per xdist worker) gets its own TMPDIR, which the image-builder
    processes it starts inherit: their work folders, locks and clean-up sweeps, and the tests
    that look for leftovers there, never meet another worker's. Its name holds a capital and
    "_", as a user's TMPDIR may: buildah refuses both in the names it derives from paths."""
    tmp_path_factory.getbasetemp()  # pytest's own folders stay where they were
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    folder = Path(tempfile.mkdtemp(prefix=f"Image_Builder-tests-{worker}-"))
    folder.chmod(0o1777)  # as /tmp is: the build accounts make their folders here too
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        yield folder
    finally:
        if before is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = None
        shutil.rmtree(folder, ignore_errors=True)


DATA = Path(__file__).parent / "data"
EVENTS = DATA / "github-events"

# Variables that would make the tool think it runs in some CI; tests set what they need.
CI_VARIABLES = (
    "CI",
    "GITHUB_ACTIONS",
    "GITHUB_EVENT_NAME",
    "GITHUB_EVENT_PATH",
    "GITHUB_SHA",
    "GITHUB_REF",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "BUILD_BUILDID",
    "TF_BUILD",
    "JENKINS_HOME",
    "REPO_OWNER",
    "REPO_NAME",
    "JOB_TYPE",
    "PULL_NUMBER",
    "PULL_BASE_SHA",
    "PULL_PULL_SHA",
    "CHANGE_ID",
    "GIT_URL",
    "GIT_COMMIT",
    "NO_COLOR",
)


@pytest.fixture(autouse=True)
def _clean_ci_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def leaks(secret: str, *texts: str, directives: bool = True) -> list[str]:
    """Lines that show ``secret``, or any line of a multi-line one. With ``directives`` (a
    GitHub step's stderr), an ``::add-mask::`` line is not a leak: the runner consumes the
    directive and never displays it. Anywhere else it is."""
    parts = [part for part in secret.splitlines() if part.strip()] or [secret]
    return [
        line
        for text in texts
        for line in text.splitlines()
        if any(part in line for part in parts)
        and not (directives and line.startswith("::add-mask::"))
    ]
