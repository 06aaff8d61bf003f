"""HTTP plumbing shared by the clients: TLS contexts, the retry policy, Retry-After, and the one
rule of which failures are tried again (:func:`send_with_retries`).

Each external system still has its own module (registry.py, signing/notary.py, trust.py, ...);
this module only holds what they would otherwise each write again."""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx

from image_builder.errors import InputError, RuntimeFailure

T = TypeVar("T")

# Answers worth another try; all but 429 only for a request that is safe to repeat.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


def tls_context(
    *, ca_file: Path | None = None, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """The system trust store (which honours ``SSL_CERT_FILE``), or ``ca_file`` instead."""
    try:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert_file is not None:
            context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise InputError(f"cannot load TLS material: {exc}") from None
    return context


class RetryableError(Exception):
    """A response or failure worth another try. ``retry_after`` comes from the server;
    ``response`` is the answer that was refused, ``cause`` the exception that ended the try."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        response: httpx.Response | None = None,
        cause: Exception | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.response = response
        self.cause = cause

    @property
    def reason(self) -> str:
        """The failure without the request: ``HTTP 503``, ``ConnectError: ...``."""
        if self.response is not None:
            return f"HTTP {self.response.status_code}"
        if self.cause is not None:
            return describe(self.cause)
        return str(self)


class RetriesExhausted(RuntimeFailure):
    """No try succeeded within the policy's attempts, budget or deadline. Each client wraps it in
    its own words, from ``attempts`` and ``last``."""

    def __init__(self, message: str, *, attempts: int, last: RetryableError) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last = last


class RequestUncertain(RuntimeFailure):
    """A request that is not safe to repeat failed after it may have arrived: whether it took
    effect is unknown, so it is not sent again."""

    def __init__(self, message: str, *, cause: httpx.RequestError) -> None:
        super().__init__(message)
        self.cause = cause


def describe(exc: BaseException) -> str:
    """An exception in one line: its kind and, when it has one, its message."""
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def retry_after_seconds(response: httpx.Response, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds, from delta-seconds or an HTTP date, capped."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdecimal():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


class Deadline:
    """A point in time that a whole piece of work must finish by (monotonic clock)."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._end = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Jittered exponential backoff, bounded by a total time budget and, when ``attempts`` is
    set, by a number of attempts. No retry starts whose wait would end past the budget."""

    attempts: int | None = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    budget: float = 60.0

    def run(
        self,
        action: Callable[[], T],
        *,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int, RetryableError, float], None] | None = None,
        deadline: Deadline | None = None,
    ) -> T:
        """Call ``action`` until it returns; retry only on :class:`RetryableError`, within the
        budget and ``deadline``, whichever ends first."""
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_before_delay,
            stop_never,
        )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            backoff = min(self.max_delay, self.base_delay * 2 ** (state.attempt_number - 1))
            delay = random.uniform(backoff / 2, backoff)  # noqa: S311 - jitter, not security
            if isinstance(error, RetryableError) and error.retry_after is not None:
                delay = max(delay, error.retry_after)
            return delay

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if on_retry is not None and isinstance(error, RetryableError) and state.next_action:
                on_retry(state.attempt_number, error, state.next_action.sleep)

        budget = self.budget if deadline is None else min(self.budget, deadline.remaining())
        by_count = stop_never if self.attempts is None else stop_after_attempt(self.attempts)
        retrying = Retrying(
            retry=retry_if_exception_type(RetryableError),
            stop=by_count | stop_before_delay(budget),
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(action)


# Failures after which the request provably never left: no connection was made.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout)


def send_with_retries(
    exchange: Callable[[], httpx.Response],
    *,
    what: str,
    policy: RetryPolicy,
    idempotent: bool = True,
    deadline: Deadline | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[int, RetryableError, float], None] | None = None,
) -> httpx.Response:
    """Call ``exchange`` (one request and its answer; the caller keeps its auth, limits and stop
    checks there) until it gives an answer not worth another try, and return that answer.

    The one rule of what is tried again: a request that never left (no connection) and a 429
    always; a request that may have arrived (a timeout, a dropped connection, an unreadable
    answer) and 408, 500, 502, 503, 504 only when ``idempotent``, since repeating a request that
    creates something could create it twice. Such a request raises :class:`RequestUncertain`
    instead, and such a status is returned for the caller to judge. ``Retry-After`` is honoured;
    the policy's attempts and budget and ``deadline`` bound it all, and when they run out
    :class:`RetriesExhausted` carries the attempts made and the last failure. ``what`` names the
    request in messages (``GET https://...``)."""
    attempts = 0

    def attempt() -> httpx.Response:
        nonlocal attempts
        attempts += 1
        try:
            response = exchange()
        except NOT_SENT as exc:
            raise RetryableError(f"{what}: {describe(exc)}", cause=exc) from exc
        except httpx.RequestError as exc:
            if idempotent:
                raise RetryableError(f"{what}: {describe(exc)}", cause=exc) from exc
            raise RequestUncertain(f"{what} got no answer: {describe(exc)}", cause=exc) from None
        status = response.status_code
        if status == 429 or (idempotent and status in RETRY_STATUSES):
            raise RetryableError(
                f"{what} answered HTTP {status}",
                retry_after=retry_after_seconds(response),
                response=response,
            )
        return response

    try:
        return policy.run(attempt, sleep=sleep, on_retry=on_retry, deadline=deadline)
    except RetryableError as exc:
        raise RetriesExhausted(
            f"{exc} (gave up after {attempts} attempts)", attempts=attempts, last=exc
        ) from None
