"""The check before a build that pushes: the registry answers, accepts the credentials and lets
them push, or the build stops in seconds with the cause. Over an httpx mock transport."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from image_builder.oci import Reference
from image_builder.registry import (
    CHECK_ATTEMPTS,
    Credentials,
    PushRefused,
    RegistryClient,
    Unreachable,
    ping,
)

REPO = Reference(host="registry.example", repository="org/app")
BASIC = httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})


def bearer(error: str = "") -> httpx.Response:
    extra = f',error="{error}"' if error else ""
    challenge = f'Bearer realm="https://registry.example/token",service="reg"{extra}'
    return httpx.Response(401, headers={"WWW-Authenticate": challenge})


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(f"{request.method} {request.url.path}")
        return self.handler(request)


def client(handler: Handler, credentials: Credentials | None = None) -> RegistryClient:
    return RegistryClient(
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        credentials=lambda host: credentials,
        plain_http=lambda host: False,
    )


def test_a_closed_port_is_unreachable_after_two_quick_attempts() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    fake = Recorder(refuse)
    with pytest.raises(Unreachable) as caught:
        client(fake).check_push(REPO)
    assert str(caught.value) == "registry registry.example is unreachable (connection refused)"
    assert caught.value.host == "registry.example"
    assert fake.seen == ["GET /v2/"] * CHECK_ATTEMPTS == ["GET /v2/"] * 2


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (httpx.ConnectError("[Errno -2] Name or service not known"), "its name does not resolve"),
        (httpx.ConnectTimeout("timed out"), "no connection within 3 s"),
        (
            httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
            "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
        ),
    ],
)
def test_why_no_connection_was_made_is_named(error: httpx.TransportError, cause: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    with pytest.raises(Unreachable) as caught:
        client(fail).check_push(REPO)
    assert str(caught.value) == f"registry registry.example is unreachable ({cause})"


def test_something_that_is_not_a_registry_is_named() -> None:
    with pytest.raises(
        Unreachable, match=r"does not answer as an OCI registry \(GET /v2/: HTTP 404"
    ):
        client(lambda request: httpx.Response(404, text="not found")).check_push(REPO)


def test_a_push_allowed_registry_passes_and_the_probe_upload_is_cancelled() -> None:
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        if request.method == "POST":
            return httpx.Response(
                202, headers={"Location": "/v2/org/app/blobs/uploads/u1?_state=x"}
            )
        return httpx.Response(204)

    fake = Recorder(registry)
    assert client(fake).check_push(REPO) is None
    assert fake.seen == [
        "GET /v2/",
        "POST /v2/org/app/blobs/uploads/",
        "DELETE /v2/org/app/blobs/uploads/u1",
    ]


def test_wrong_basic_credentials_are_refused_with_the_fix() -> None:
    fake = Recorder(lambda request: BASIC)
    with pytest.raises(PushRefused) as caught:
        client(fake, Credentials("robot", "wrong")).check_push(REPO)
    assert str(caught.value) == (
        "registry registry.example refused the credentials for org/app (401); check "
        "REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )
    assert fake.seen == ["GET /v2/", "GET /v2/"]  # once without, once with the credentials


def test_no_credentials_for_a_registry_that_wants_them() -> None:
    with pytest.raises(PushRefused) as caught:
        client(lambda request: BASIC).check_push(REPO)
    assert str(caught.value) == (
        "registry registry.example wants credentials to push to org/app (401), and none were "
        "found for registry.example; log in (buildah login registry.example), or check "
        "REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )


def test_a_token_service_that_refuses_the_password() -> None:
    scopes: list[str] = []

    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            scopes.append(request.url.params["scope"])
            return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED"}]})
        return bearer()

    with pytest.raises(PushRefused) as caught:
        client(registry, Credentials("robot", "wrong")).check_push(REPO)
    assert str(caught.value) == (
        "registry registry.example refused the credentials for org/app (401); check "
        "REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )
    assert scopes == ["repository:org/app:pull,push"]  # the push scope is asked for


def test_a_token_without_push_rights_is_refused() -> None:
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"token": "pull-only"})
        if request.url.path == "/v2/":
            has = request.headers.get("authorization") == "Bearer pull-only"
            return httpx.Response(200) if has else bearer()
        return bearer("insufficient_scope")

    with pytest.raises(PushRefused) as caught:
        client(registry, Credentials("robot", "right")).check_push(REPO)
    assert str(caught.value) == (
        "registry registry.example does not let these credentials push to org/app (401 "
        "insufficient_scope); ask for push rights to org/app, or check REGISTRY_AUTH_FILE or "
        "~/.docker/config.json"
    )


def test_a_403_on_the_upload_is_a_refused_push() -> None:
    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        return httpx.Response(403, json={"errors": [{"code": "DENIED", "message": "no push"}]})

    with pytest.raises(PushRefused, match=r"push to org/app \(403: DENIED: no push\); ask for"):
        client(registry).check_push(REPO)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503),
        httpx.Response(429),
    ],
)
def test_a_busy_registry_is_only_a_notice(answer: httpx.Response) -> None:
    fake = Recorder(lambda request: answer)
    notice = client(fake).check_push(REPO)
    assert notice == f"registry registry.example answered the check with HTTP {answer.status_code}"
    assert fake.seen == ["GET /v2/"]  # no retry: the push has its own


def test_an_unexpected_answer_to_the_upload_is_only_a_notice() -> None:
    def read_only(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/":
            return httpx.Response(200)
        body = {"errors": [{"code": "UNSUPPORTED", "message": "read-only"}]}
        return httpx.Response(405, json=body)

    assert client(read_only).check_push(REPO) == (
        "registry registry.example answered the push check for org/app with HTTP 405 "
        "(UNSUPPORTED: read-only)"
    )


def test_a_registry_that_does_not_answer_in_time_is_only_a_notice() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    notice = client(slow).check_push(REPO)
    assert notice == "registry registry.example did not answer the check within 10 s"


def test_ping_uses_httpx_and_knows_a_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"http://up:5000/v2/": 200, "http://auth:5000/v2/": 401, "http://web:80/v2/": 404}

    def get(url: str, **kwargs: object) -> httpx.Response:
        assert kwargs["trust_env"] is False
        if url not in answers:
            raise httpx.ConnectError("refused")
        return httpx.Response(answers[url])

    monkeypatch.setattr(httpx, "get", get)
    assert ping("http://up:5000")
    assert ping("http://auth:5000/")
    assert not ping("http://web:80")
    assert not ping("http://down:5000")
