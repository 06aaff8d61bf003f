"""The one rule of which HTTP failures are tried again (``send_with_retries``), over
httpx.MockTransport, with a sleep that records its waits instead of sleeping."""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from image_builder.errors import RuntimeFailure
from image_builder.http import (
    Deadline,
    RequestUncertain,
    RetriesExhausted,
    RetryableError,
    RetryPolicy,
    send_with_retries,
)

URL = "https://service.example/thing"
POLICY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.01, budget=60.0)

Step = httpx.Response | Exception


class Script:
    """A transport that answers with ``steps`` in turn (the last one again once they run out),
    and a sleep that only records how long it was asked to wait."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests = 0
        self.waits: list[float] = []
        self.client = httpx.Client(transport=httpx.MockTransport(self.answer))

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            if isinstance(step, httpx.RequestError):
                step.request = request
            raise step
        return step

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)

    def send(
        self,
        *,
        idempotent: bool = True,
        policy: RetryPolicy = POLICY,
        deadline: Deadline | None = None,
        on_retry: Callable[[int, RetryableError, float], None] | None = None,
    ) -> httpx.Response:
        return send_with_retries(
            lambda: self.client.post(URL),
            what=f"POST {URL}",
            policy=policy,
            idempotent=idempotent,
            deadline=deadline,
            sleep=self.sleep,
            on_retry=on_retry,
        )


def ok() -> httpx.Response:
    return httpx.Response(200, text="done")


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_429_is_tried_again_whether_or_not_the_request_is_safe_to_repeat(
    idempotent: bool,
) -> None:
    script = Script(httpx.Response(429), ok())
    assert script.send(idempotent=idempotent).text == "done"
    assert script.requests == 2


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_statuses_are_tried_again_when_the_request_is_idempotent(status: int) -> None:
    script = Script(httpx.Response(status), ok())
    assert script.send().status_code == 200
    assert script.requests == 2


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_transient_statuses_are_returned_when_the_request_is_not_idempotent(status: int) -> None:
    """The request may have taken effect: the caller judges the answer, nothing is sent twice."""
    script = Script(httpx.Response(status), ok())
    assert script.send(idempotent=False).status_code == status
    assert script.requests == 1


@pytest.mark.parametrize("status", [200, 201, 202, 301, 400, 401, 403, 404, 409, 501, 505])
@pytest.mark.parametrize("idempotent", [True, False])
def test_other_statuses_are_returned_at_once(status: int, idempotent: bool) -> None:
    script = Script(httpx.Response(status), ok())
    assert script.send(idempotent=idempotent).status_code == status
    assert script.requests == 1
    assert script.waits == []


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("[Errno 111] Connection refused"), httpx.ConnectTimeout("timed out")],
)
@pytest.mark.parametrize("idempotent", [True, False])
def test_a_request_that_never_left_is_always_tried_again(
    failure: httpx.RequestError, idempotent: bool
) -> None:
    script = Script(failure, ok())
    assert script.send(idempotent=idempotent).status_code == 200
    assert script.requests == 2


MAY_HAVE_ARRIVED = [
    httpx.ReadTimeout("timed out"),
    httpx.WriteTimeout("timed out"),
    httpx.PoolTimeout("timed out"),
    httpx.ReadError("connection reset by peer"),
    httpx.WriteError("broken pipe"),
    httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
    httpx.DecodingError("invalid gzip data"),
]


@pytest.mark.parametrize("failure", MAY_HAVE_ARRIVED, ids=lambda e: type(e).__name__)
def test_a_request_that_may_have_arrived_is_tried_again_when_idempotent(
    failure: httpx.RequestError,
) -> None:
    script = Script(failure, ok())
    assert script.send().status_code == 200
    assert script.requests == 2


@pytest.mark.parametrize("failure", MAY_HAVE_ARRIVED, ids=lambda e: type(e).__name__)
def test_a_request_that_may_have_arrived_is_uncertain_when_not_idempotent(
    failure: httpx.RequestError,
) -> None:
    script = Script(failure, ok())
    with pytest.raises(RequestUncertain) as caught:
        script.send(idempotent=False)
    assert script.requests == 1
    assert caught.value.cause is failure
    assert caught.value.exit_code == 1
    assert str(caught.value) == f"POST {URL} got no answer: {type(failure).__name__}: {failure}"


def test_the_callers_own_errors_pass_through_untouched() -> None:
    calls = []

    def exchange() -> httpx.Response:
        calls.append(1)
        raise RuntimeFailure("not sent: image-builder is stopping")

    with pytest.raises(RuntimeFailure, match="image-builder is stopping"):
        send_with_retries(exchange, what="GET x", policy=POLICY, sleep=lambda _: None)
    assert len(calls) == 1


def test_retry_after_in_seconds_is_waited() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "7"}), ok())
    script.send()
    assert script.waits == [7.0]


def test_retry_after_as_an_http_date_is_waited() -> None:
    when = datetime.now(UTC) + timedelta(seconds=20)
    date = email.utils.format_datetime(when.replace(microsecond=0), usegmt=True)
    script = Script(httpx.Response(429, headers={"Retry-After": date}), ok())
    script.send()
    (wait,) = script.waits
    assert 15.0 <= wait <= 20.0


def test_retry_after_is_capped() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "86400"}), ok())
    script.send()
    assert script.waits == [30.0]


def test_without_retry_after_the_backoff_grows() -> None:
    script = Script(httpx.Response(503))
    policy = RetryPolicy(attempts=4, base_delay=1.0, max_delay=100.0, budget=600.0)
    with pytest.raises(RetriesExhausted):
        script.send(policy=policy)
    # Jittered between half and all of 1, 2, 4 seconds.
    assert len(script.waits) == 3
    assert 0.5 <= script.waits[0] <= 1.0
    assert 1.0 <= script.waits[1] <= 2.0
    assert 2.0 <= script.waits[2] <= 4.0


def test_giving_up_says_how_many_attempts_and_the_last_failure() -> None:
    script = Script(httpx.ConnectError("refused"), httpx.Response(502), httpx.Response(503))
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01, budget=60.0)
    with pytest.raises(RetriesExhausted) as caught:
        script.send(policy=policy)
    error = caught.value
    assert error.attempts == 3 == script.requests
    assert error.exit_code == 1
    assert error.last.response is not None
    assert error.last.response.status_code == 503
    assert error.last.reason == "HTTP 503"
    assert str(error.last) == f"POST {URL} answered HTTP 503"
    assert str(error) == f"POST {URL} answered HTTP 503 (gave up after 3 attempts)"


def test_giving_up_after_a_transport_error_keeps_it() -> None:
    failure = httpx.ReadTimeout("timed out")
    script = Script(failure)
    policy = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.01, budget=60.0)
    with pytest.raises(RetriesExhausted) as caught:
        script.send(policy=policy)
    assert caught.value.last.cause is failure
    assert caught.value.last.response is None
    assert caught.value.last.reason == "ReadTimeout: timed out"


def test_a_wait_past_the_budget_is_not_started() -> None:
    script = Script(httpx.Response(503, headers={"Retry-After": "10"}), ok())
    policy = RetryPolicy(attempts=None, base_delay=0.01, max_delay=0.01, budget=5.0)
    with pytest.raises(RetriesExhausted) as caught:
        script.send(policy=policy)
    assert caught.value.attempts == 1
    assert script.waits == []


@pytest.mark.parametrize(("left", "requests"), [(5.0, 1), (15.0, 2)])
def test_the_deadline_ends_retries_before_the_budget(left: float, requests: int) -> None:
    """The budget (60 s) would allow the 10 s wait; the deadline allows it only with 15 s left."""
    deadline = Deadline(left, clock=lambda: 100.0)
    script = Script(httpx.Response(503, headers={"Retry-After": "10"}), ok())
    policy = RetryPolicy(attempts=None, base_delay=0.01, max_delay=0.01, budget=60.0)
    if requests == 1:
        with pytest.raises(RetriesExhausted):
            script.send(policy=policy, deadline=deadline)
    else:
        assert script.send(policy=policy, deadline=deadline).text == "done"
    assert script.requests == requests


def test_an_expired_deadline_allows_one_attempt_and_no_retry() -> None:
    deadline = Deadline(0.0)
    script = Script(httpx.Response(503), ok())
    with pytest.raises(RetriesExhausted):
        script.send(deadline=deadline)
    assert script.requests == 1


def test_on_retry_hears_each_retry_with_its_wait() -> None:
    heard: list[tuple[int, str, float]] = []
    script = Script(
        httpx.Response(503, headers={"Retry-After": "3"}),
        httpx.ConnectError("refused"),
        httpx.Response(429, headers={"Retry-After": "4"}),
        ok(),
    )
    script.send(on_retry=lambda number, error, wait: heard.append((number, error.reason, wait)))
    assert [(n, reason) for n, reason, _ in heard] == [
        (1, "HTTP 503"),
        (2, "ConnectError: refused"),
        (3, "HTTP 429"),
    ]
    assert heard[0][2] == 3.0
    assert heard[1][2] <= 0.01  # no Retry-After: the policy's own backoff
    assert heard[2][2] == 4.0
    assert [w for _, _, w in heard] == script.waits
