"""Unit tests are fast and hermetic: no network, no subprocesses."""

from __future__ import annotations

import subprocess
from typing import Any, NoReturn

import pytest
from pytest_socket import disable_socket

from image_builder import proc


def pytest_runtest_setup() -> None:
    disable_socket()


@pytest.fixture(autouse=True)
def _no_subprocesses(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"unit tests must not start processes: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture(autouse=True)
def _fresh_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that stops image-builder (as a signal would) stops only its own run."""
    monkeypatch.setattr(proc, "CHILDREN", proc.Children())
