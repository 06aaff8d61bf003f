"""A RegistryClient over httpx.MockTransport, for unit tests (no socket, no process)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from image_builder.http import RetryPolicy
from image_builder.registry import RegistryClient


def mock_registry(
    answer: Callable[[httpx.Request], httpx.Response], *, retry: RetryPolicy | None = None
) -> RegistryClient:
    """A client whose every request ``answer`` answers: anonymous, HTTPS, every host resolving
    to a public address; one attempt, unless ``retry`` says otherwise."""
    return RegistryClient(
        http=httpx.Client(transport=httpx.MockTransport(answer)),
        credentials=lambda host: None,
        plain_http=lambda host: False,
        retry=retry or RetryPolicy(attempts=1, budget=0.0),
        resolve=lambda host: ["203.0.113.7"],
    )


# Retries at once, for as long as a test's fault lasts (up to five seconds).
RETRY_AT_ONCE = RetryPolicy(attempts=None, base_delay=0.0, max_delay=0.0, budget=5.0)
