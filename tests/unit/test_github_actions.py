"""The runner's token service client over httpx.MockTransport: the token asked for with the
audience, retried on what the one retry rule retries, and each refusal in one line."""

from __future__ import annotations

import httpx
import pytest

from image_builder.errors import InputError, RuntimeFailure
from image_builder.github_actions import PERMISSION_HINT, request_oidc_token

ENV = {
    "ACTIONS_ID_TOKEN_REQUEST_URL": "https://runner.example/token?api-version=2.0",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "request-token",
}
JWT = "aGVhZGVy.Y2xhaW1z.c2ln"


def service(*answers: httpx.Response | Exception) -> tuple[httpx.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        next_answer = queue.pop(0)
        if isinstance(next_answer, Exception):
            raise next_answer
        return next_answer

    return httpx.Client(transport=httpx.MockTransport(answer)), seen


def test_the_token_is_asked_for_with_the_audience_and_the_request_token() -> None:
    client, seen = service(httpx.Response(200, json={"value": JWT}))
    assert request_oidc_token("image-builder", ENV, http=client) == JWT
    assert seen[0].url.params["audience"] == "image-builder"
    assert seen[0].url.params["api-version"] == "2.0"
    assert seen[0].headers["authorization"] == "Bearer request-token"


def test_a_busy_service_is_asked_again() -> None:
    client, seen = service(
        httpx.Response(503),
        httpx.ConnectError("refused"),
        httpx.Response(200, json={"value": JWT}),
    )
    assert request_oidc_token("aud", ENV, http=client) == JWT
    assert len(seen) == 3
    # Every try gets what is left of one 15 s deadline: the last one ends by it too.
    timeouts = [request.extensions["timeout"]["read"] for request in seen]
    assert 15.0 >= timeouts[0] > timeouts[1] > timeouts[2] > 0, timeouts


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (
            [httpx.Response(403, json={"message": "no"})],
            f"the runner's token service answered HTTP 403; {PERMISSION_HINT}",
        ),
        (
            [httpx.Response(503)] * 3,
            f"the runner's token service answered HTTP 503; {PERMISSION_HINT}",
        ),
        (
            [httpx.ConnectError("refused")] * 3,
            "the runner's token service cannot be reached: ConnectError",
        ),
        (
            [httpx.Response(200, json={"token": JWT})],
            "the runner's token service answered without a token value",
        ),
        (
            [httpx.Response(200, json={"value": 7})],
            "the runner's token service answered without a token value",
        ),
        (
            [httpx.Response(200, text="<html>")],
            "the runner's token service answered without a token value",
        ),
        (
            [httpx.Response(200, json={"value": "not-a-jwt"})],
            "the runner's token service returned something that is not a JWT",
        ),
    ],
)
def test_a_failure_is_one_line_and_exit_1(
    answers: list[httpx.Response | Exception], message: str
) -> None:
    client, _ = service(*answers)
    with pytest.raises(RuntimeFailure) as caught:
        request_oidc_token("aud", ENV, http=client)
    assert str(caught.value) == message
    assert caught.value.exit_code == 1
    assert "request-token" not in str(caught.value)


@pytest.mark.parametrize("missing", sorted(ENV))
def test_outside_a_job_with_id_token_write_it_says_what_to_grant(missing: str) -> None:
    env = {name: value for name, value in ENV.items() if name != missing}
    with pytest.raises(InputError) as caught:
        request_oidc_token("aud", env)
    assert str(caught.value) == f"{missing} is not set: {PERMISSION_HINT}"
    assert caught.value.exit_code == 2
