"""The console script as a docker or pip user drives it: ``-V``, ``-`` for stdout, ``--json``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from image_builder import __version__
from tests.conftest import CI_VARIABLES, EVENTS
from tests.integration.conftest import Cli, Registry

SCRIPT = Path(sys.executable).parent / "image-builder"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("1" * 40 + "\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


def image_builder(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SCRIPT.exists(), f"{SCRIPT} is not installed: run scripts/setup"
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_dash_v_prints_the_version(tmp_path: Path) -> None:
    done = image_builder("-V", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"image-builder {__version__}\n", "")


def test_tags_output_file_dash_is_stdout(checkout: Path) -> None:
    done = image_builder("tags", "--tags-output-file", "-", cwd=checkout)
    assert (done.returncode, done.stderr) == (0, "")
    assert [tag["name"] for tag in json.loads(done.stdout)] == ["default_tag"]
    assert len(done.stdout.splitlines()) == 1
    assert not (checkout / "-").exists()


def test_build_json_dry_run_prints_the_plan_alone(checkout: Path) -> None:
    done = image_builder("build", "--name", "team/app", "--dry-run", "--json", cwd=checkout)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "team/app"  # stdout is one JSON document


def test_a_typo_gets_a_suggestion(checkout: Path) -> None:
    done = image_builder("biuld", cwd=checkout)
    assert (done.returncode, done.stdout, done.stderr) == (
        2,
        "",
        "error: unknown command 'biuld'; did you mean 'build'? see 'image-builder --help'\n",
    )


def test_build_json_quiet_prints_the_report_alone(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """A real build and push: stdout is the report's JSON, stderr has no step lines."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo built > /built\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/json", "--context", str(ctx), "--config", str(cfg),
        "--platform", "linux/amd64", "--json", "-q",
        env={"GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push",
             "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json")},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)  # the whole of stdout
    assert (report["status"], report["pushed"]) == ("Succeeded", True)
    assert "IMAGE BUILD REPORT" not in run.stdout
    assert "::group::" not in run.stderr  # no steps
    assert "STEP 2/2" not in run.stderr  # no tool output
