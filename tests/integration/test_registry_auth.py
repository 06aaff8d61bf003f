"""Credentials come from the usual auth file: buildah pushes with them and the project's own
registry client answers the registry's basic-auth challenge with them when it confirms the push."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.integration.conftest import Cli, Registry, secret

PASSWORD = secret("registry-robot-password-9d2e")
PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


def bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt, what htpasswd wants


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"robot:{bcrypt(PASSWORD)}\n")
    server = Registry(tmp_path / "private", htpasswd=htpasswd)
    server.start()
    yield server
    server.stop()


def auth_file(path: Path, host: str, password: str) -> Path:
    encoded = secret(base64.b64encode(f"robot:{password}".encode()).decode())
    path.write_text(json.dumps({"auths": {host: {"auth": encoded}}}))
    return path


def test_push_with_credentials_from_the_auth_file(
    cli: Cli, private_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {base_image}\nCOPY a /a\n")
    (ctx / "a").write_text("private\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"registry: {private_registry.address}/private\n")
    args = (
        "build",
        "--name",
        "team/private",
        "--context",
        str(ctx),
        "--config",
        str(config),
        "--tag",
        "p",
        "--platform",
        "linux/amd64",
    )

    good = cli(
        *args,
        env={
            **PUSH,
            "REGISTRY_AUTH_FILE": str(
                auth_file(tmp_path / "good.json", private_registry.address, PASSWORD)
            ),
        },
    )
    assert good.returncode == 0, good.stderr
    assert good.report["pushed"] is True
    assert len(good.report["images_list"]) == 2

    wrong = cli(
        *args,
        env={
            **PUSH,
            "REGISTRY_AUTH_FILE": str(
                auth_file(tmp_path / "bad.json", private_registry.address, "nope")
            ),
        },
    )
    assert wrong.returncode == 1
    assert wrong.report["pushed"] is False
    assert wrong.report["images_list"] == []
    first, second = wrong.report["failed_images"]
    assert first["error"].endswith("unauthorized: authentication required")
    assert second["error"].startswith("not attempted: the push of")
    assert (
        wrong.stderr.count("unauthorized: authentication required") == 1
    )  # a 401 is never retried
