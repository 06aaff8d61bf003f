from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CI_VARIABLES, EVENTS


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    return {**env, **extra}


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-m", "image_builder"],
        [str(Path(sys.executable).parent / "image-builder")],
    ],
    ids=["python -m", "console script"],
)
def test_entry_points_compute_tags(command: list[str], tmp_path: Path) -> None:
    assert shutil.which(command[0]), f"{command[0]} is not installed: run scripts/setup"
    env = clean_env(
        GITHUB_ACTIONS="true",
        GITHUB_EVENT_NAME="pull_request_target",
        GITHUB_EVENT_PATH=str(EVENTS / "pull_request.opened.json"),
    )
    done = subprocess.run(
        [*command, "tags", "--context", ".", "--tag", "edge"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [
        {"name": "edge", "value": "edge"},
        {"name": "default_tag", "value": "PR-2", "validation": "^(PR-[0-9]+)$"},
    ]


def test_refusal_from_the_console_script(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("1" * 40 + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "image_builder", "tags", "--tag", "{{ .Secret }}"],
        env=clean_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(
        "error: tag template '{{ .Secret }}' uses unknown field '.Secret'"
    )
    assert len(done.stderr.splitlines()) == 1
