"""The bad-input corpus's common parts: a push on GitHub, a build command line, and a workspace
with the files the cases point at (symlinks out of the context, broken payloads, a bad env
file). Every case is refused with exit code 2 and one line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import EVENTS
from tests.support.oidc import TokenMinter

PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}
# A case's config that means: the trust policy of the case's token issuer.
TRUST = "trust-placeholder"


@dataclass(frozen=True)
class Case:
    """A command line refused with exit code 2 and one line holding ``message``."""

    id: str
    args: tuple[str, ...]
    message: str
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None  # config.yaml's text, or TRUST
    token: Callable[[TokenMinter], str] | None = None  # the AUTHORIZATION value, minted


# Payloads the workspace holds; a case names them by file name.
PAYLOADS = ("truncated.json", "wrongtype.json", "huge.json")


def build(*extra: str) -> tuple[str, ...]:
    return ("build", "--name", "team/app", "--context", "ctx", "--dry-run", *extra)


def tag(value: str) -> tuple[str, ...]:
    return build("--tag", value)


def make_workspace(root: Path) -> Path:
    ctx = root / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "bad.env").write_text("GOOD=1\nthis is not a pair\n")
    outside = root / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (outside / "envs").write_text("SECRET=1\n")
    os.symlink(outside / "Dockerfile", ctx / "link")
    os.symlink(outside / "envs", ctx / "envlink")
    (root / "truncated.json").write_text((EVENTS / "push.new-branch.json").read_text()[:500])
    wrong = json.loads((EVENTS / "pull_request.opened.json").read_text())
    wrong["number"] = "two"
    (root / "wrongtype.json").write_text(json.dumps(wrong))
    (root / "huge.json").write_text("[" * 200_000)
    return root


def case_env(extra: Mapping[str, str], workspace: Path) -> dict[str, str]:
    """The push, a case's variables, and a payload of the workspace where the case names one."""
    env = {**PUSH, **extra}
    if env["GITHUB_EVENT_PATH"] in PAYLOADS:
        env["GITHUB_EVENT_PATH"] = str(workspace / env["GITHUB_EVENT_PATH"])
    return env


def shown_lines(stderr: str) -> list[str]:
    """stderr without the ``::add-mask::`` directives (the runner consumes them)."""
    return [line for line in stderr.splitlines() if not line.startswith("::add-mask::")]
