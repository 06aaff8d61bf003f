"""What integration tests hand to ``image-builder build``: a build context, a config file, a
GitHub Actions environment, and the trusted side's config and push event for a token of
:class:`~tests.support.oidc.FakeIssuer`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from tests.conftest import EVENTS
from tests.support.oidc import FakeIssuer


class HasAddress(Protocol):
    @property
    def address(self) -> str: ...


def context(tmp_path: Path, dockerfile: str, **files: str) -> Path:
    """``tmp_path/ctx`` with the Dockerfile and ``files`` (name → text)."""
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def github(event: str, payload: str, **extra: str) -> dict[str, str]:
    """The environment of a GitHub Actions job for ``event``, with one of tests/data's payloads."""
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / payload),
        **extra,
    }


def config_file(tmp_path: Path, issuer: FakeIssuer, registry: HasAddress, extra: str = "") -> str:
    """A config that trusts ``issuer``'s tokens and pushes to ``registry``/trusted."""
    path = tmp_path / "config.yaml"
    path.write_text(
        f"registry: {registry.address}/trusted\nseen-tokens: {tmp_path}/seen.json\n"
        + issuer.trust_yaml()
        + extra
    )
    return str(path)


def push_payload(tmp_path: Path) -> str:
    """A push event of org/app, the repository the issuer's tokens name by default."""
    payload = json.loads((EVENTS / "push.new-branch.json").read_text())
    payload["repository"]["name"] = "app"
    payload["repository"]["owner"]["login"] = "org"
    payload["repository"]["html_url"] = "https://github.com/org/app"
    path = tmp_path / "push.json"
    path.write_text(json.dumps(payload))
    return str(path)
