"""Honest local builds: a checkout with uncommitted changes in the build context gets a -dirty
default tag, a warning, no release-only tags and no signature. Real git, real CLI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.integration.conftest import Cli

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], env=GIT_ENV, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, str]:
    """A clean checkout of main: app/ is the build context, docs/ is outside it."""
    repo = tmp_path / "repo"
    (repo / "app").mkdir(parents=True)
    (repo / "docs").mkdir()
    (repo / "app" / "Dockerfile").write_text("FROM scratch\nCOPY . /\n")
    (repo / "docs" / "README").write_text("docs\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo, git(repo, "rev-parse", "HEAD")


def tags(cli: Cli, repo: Path, *extra: str) -> tuple[list[str], list[str]]:
    run = cli("tags", "--context", "app", "--tag", "latest", *extra, cwd=repo)
    assert run.returncode == 0, run.stderr
    return [t["value"] for t in json.loads(run.stdout)], run.stderr.splitlines()


def today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def test_a_clean_checkout_of_main_gets_its_commit_tag_and_latest(
    cli: Cli, checkout: tuple[Path, str]
) -> None:
    repo, sha = checkout
    assert tags(cli, repo) == (["latest", f"v{today()}-{sha[:8]}"], [])


@pytest.mark.parametrize(
    "change",
    ["modified", "staged", "untracked", "deleted"],
)
def test_uncommitted_changes_in_the_context_mark_the_build_dirty(
    change: str, cli: Cli, checkout: tuple[Path, str]
) -> None:
    repo, sha = checkout
    dockerfile = repo / "app" / "Dockerfile"
    if change == "modified":
        dockerfile.write_text("FROM scratch\nCOPY . /x/\n")
    elif change == "staged":
        (repo / "app" / "new").write_text("x\n")
        git(repo, "add", "app/new")
    elif change == "untracked":
        (repo / "app" / "local-only").write_text("x\n")
    else:
        (repo / "app" / "gone").write_text("x\n")
        git(repo, "add", "app/gone")
        git(repo, "commit", "-q", "-m", "second")
        sha = git(repo, "rev-parse", "HEAD")
        (repo / "app" / "gone").unlink()
    values, stderr = tags(cli, repo)
    assert values == [f"v{today()}-{sha[:8]}-dirty"]
    assert stderr == [
        dirty_warning("the build context has uncommitted changes", sha),
        "warning: tag 'latest' (--tag) is not applied: the build context has uncommitted changes",
    ]


def dirty_warning(why: str, sha: str) -> str:
    return (
        f"warning: {why}: the image may not be the commit {sha[:8]}, so its tags end in -dirty, "
        "release-only tags are dropped and nothing is signed; commit or stash the changes for a "
        "release build"
    )


def test_a_dirty_tree_marks_every_tag_so_it_overwrites_none(
    cli: Cli, checkout: tuple[Path, str]
) -> None:
    """A user tag, or a user tag repeating the default tag's name and value, gets -dirty too."""
    repo, sha = checkout
    (repo / "app" / "Dockerfile").write_text("FROM scratch\n")
    values, _ = tags(
        cli, repo, "--tag", "v1.0", "--tag", "default_tag=v{{ .Date }}-{{ .ShortSHA }}"
    )
    assert values == ["v1.0-dirty", f"v{today()}-{sha[:8]}-dirty"]


def test_the_repositorys_git_config_runs_nothing(
    cli: Cli, checkout: tuple[Path, str], tmp_path: Path
) -> None:
    """The attack: a checkout's .git/config names a core.fsmonitor command, which git status
    runs; image-builder holds registry credentials and keys."""
    repo, _ = checkout
    ran = tmp_path / "fsmonitor-ran"
    hook = tmp_path / "fsmonitor"
    hook.write_text(f"#!/bin/sh\ntouch {ran}\n")
    hook.chmod(0o755)
    git(repo, "config", "core.fsmonitor", str(hook))
    (repo / "app" / "Dockerfile").write_text("FROM scratch\n")
    assert tags(cli, repo)[0][-1].endswith("-dirty")
    assert not ran.exists()


def test_another_users_checkout_is_not_known_to_be_clean(
    cli: Cli, checkout: tuple[Path, str]
) -> None:
    """git refuses a checkout owned by someone else (and runs nothing of its config); the build
    cannot show it is the commit, so it is handled as dirty, with git's reason."""
    repo, sha = checkout
    for path in (repo, *repo.rglob("*")):
        os.lchown(path, 4321, 4321)
    values, stderr = tags(cli, repo)
    assert values == [f"v{today()}-{sha[:8]}-dirty"]
    assert stderr[0].startswith(
        "warning: git cannot tell whether the build context is clean (fatal: detected dubious "
        "ownership in repository at "
    )


def test_changes_outside_the_context_and_ignored_files_do_not_count(
    cli: Cli, checkout: tuple[Path, str]
) -> None:
    repo, sha = checkout
    (repo / "docs" / "README").write_text("changed\n")
    (repo / ".gitignore").write_text("*.log\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore logs")
    sha = git(repo, "rev-parse", "HEAD")
    (repo / "docs" / "README").write_text("changed again\n")
    (repo / "app" / "build.log").write_text("noise\n")
    assert tags(cli, repo) == (["latest", f"v{today()}-{sha[:8]}"], [])


def test_a_dirty_build_is_never_signed(
    cli: Cli, checkout: tuple[Path, str], tmp_path: Path
) -> None:
    repo, sha = checkout
    config = tmp_path / "config.yaml"
    config.write_text(
        "sign-config:\n"
        "  enabled-signers: {'*': [release-key]}\n"
        "  signers:\n"
        "    - {name: release-key, type: cosign, config: {private-key: /nonexistent/cosign.key}}\n"
    )
    clean = cli("build", "--name", "team/app", "--context", "app", "--config", str(config),
                "--dry-run", cwd=repo)  # fmt: skip
    assert clean.returncode == 0, clean.stderr
    assert [s["runs"] for s in json.loads(clean.stdout)["signers"]] == [True]

    (repo / "app" / "Dockerfile").write_text("FROM scratch\nCOPY . /y/\n")
    dirty = cli("build", "--name", "team/app", "--context", "app", "--config", str(config),
                "--dry-run", "--tag", "latest", cwd=repo)  # fmt: skip
    assert dirty.returncode == 0, dirty.stderr
    plan = json.loads(dirty.stdout)
    assert plan["signers"] == [
        {
            "name": "release-key",
            "type": "cosign",
            "runs": False,
            "reason": "enabled under '*', but the build context has uncommitted changes",
        }
    ]
    assert [(t["value"], t["rule"]) for t in plan["tags"]] == [
        (f"v{today()}-{sha[:8]}-dirty", "default-commit-tag, -dirty")
    ]
    assert plan["dirty"] == "the build context has uncommitted changes"
    assert [d["value"] for d in plan["dropped_tags"]] == ["latest"]
