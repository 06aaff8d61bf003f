"""A RegistryClient over httpx.MockTransport, for unit tests (no socket, no process)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from image_builder.http import RetryPolicy
from image_builder.registry import RegistryClient


def mock_registry(answer: Callable[[httpx.Request], httpx.Response]) -> RegistryClient:
    """A client whose every request ``answer`` answers: anonymous, HTTPS, one attempt, every
    host resolving to a public address."""
    return RegistryClient(
        http=httpx.Client(transport=httpx.MockTransport(answer)),
        credentials=lambda host: None,
        plain_http=lambda host: False,
        retry=RetryPolicy(attempts=1, budget=0.0),
        resolve=lambda host: ["203.0.113.7"],
    )
