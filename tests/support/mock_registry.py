"""A RegistryClient over httpx.MockTransport, and a small distribution API to put behind it, for
unit tests (no socket, no process)."""

from __future__ import annotations

import base64
import hashlib
import uuid
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


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class DistributionApi:
    """A small distribution API: manifests by tag or digest, blobs, uploads by POST then PUT
    with ``?digest=``. ``auth`` is ``None``, ``"basic"`` or ``"bearer"`` (tokens from
    ``/token``, scoped as asked). ``faults`` answer the next requests first."""

    def __init__(
        self,
        auth: str | None = None,
        *,
        host: str = "registry.example",
        user: str = "robot",
        password: str = "s3cret-pw",
    ) -> None:
        self.auth = auth
        self.host = host
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.uploads: set[str] = set()
        self.faults: list[httpx.Response | Exception] = []
        self.seen: list[httpx.Request] = []
        self.tokens: dict[str, str] = {}  # token -> scope

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        path = request.url.path
        if path == "/token":
            return self.token(request)
        if not self.allowed(request):
            return self.challenge(request)
        repo, _, rest = path.removeprefix("/v2/").partition("/manifests/")
        if rest:
            return self.manifest(request, rest)
        repo, _, rest = path.removeprefix("/v2/").partition("/blobs/")
        if rest.startswith("uploads/"):
            return self.upload(request, repo, rest.removeprefix("uploads/"))
        if rest:
            return self.blob(request, rest)
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND", "message": path}]})

    # --- auth ---

    def allowed(self, request: httpx.Request) -> bool:
        given = str(request.headers.get("authorization", ""))
        if self.auth is None:
            return True
        if self.auth == "basic":
            return given == self.basic
        scope = self.tokens.get(given.removeprefix("Bearer "), "")
        needs = "push" if request.method in ("PUT", "POST", "PATCH") else "pull"
        return scope.startswith("repository:team/app:") and needs in scope

    def challenge(self, request: httpx.Request) -> httpx.Response:
        if self.auth == "basic":
            header = 'Basic realm="registry"'
        else:
            action = "pull,push" if request.method in ("PUT", "POST") else "pull"
            header = (
                f'Bearer realm="https://{self.host}/token",service="{self.host}",'
                f'scope="repository:team/app:{action}"'
            )
        return httpx.Response(
            401,
            headers={"WWW-Authenticate": header},
            json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
        )

    def token(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != self.basic:
            return httpx.Response(401, json={"details": "bad credentials"})
        token = uuid.uuid4().hex
        self.tokens[token] = request.url.params.get("scope", "")
        return httpx.Response(200, json={"token": token})

    # --- content ---

    def manifest(self, request: httpx.Request, target: str) -> httpx.Response:
        if request.method == "PUT":
            data = request.read()
            digest = digest_of(data)
            entry = (data, request.headers["content-type"])
            self.manifests[target] = self.manifests[digest] = entry
            return httpx.Response(201, headers={"Docker-Content-Digest": digest})
        if target not in self.manifests:
            return httpx.Response(
                404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}
            )
        data, media_type = self.manifests[target]
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest_of(data)}
        return httpx.Response(
            200, headers=headers, content=b"" if request.method == "HEAD" else data
        )

    def blob(self, request: httpx.Request, digest: str) -> httpx.Response:
        if digest not in self.blobs:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN"}]})
        data = self.blobs[digest]
        return httpx.Response(200, content=b"" if request.method == "HEAD" else data)

    def upload(self, request: httpx.Request, repo: str, session: str) -> httpx.Response:
        if request.method == "POST":
            session = uuid.uuid4().hex
            self.uploads.add(session)
            location = f"/v2/{repo}/blobs/uploads/{session}?_state=opaque"
            return httpx.Response(202, headers={"Location": location})
        if request.method == "PUT" and session in self.uploads:
            assert request.url.params["_state"] == "opaque"  # the Location's query is kept
            data = request.read()
            if digest_of(data) != request.url.params["digest"]:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
            self.uploads.discard(session)
            self.blobs[digest_of(data)] = data
            return httpx.Response(201)
        return httpx.Response(404, json={"errors": [{"code": "BLOB_UPLOAD_UNKNOWN"}]})

    def methods(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.seen]
