"""The OCI distribution client: references, auth (Bearer challenge and basic), manifests and
blobs, with retries. Only this module talks to registries over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from image_builder import wire
from image_builder.errors import RuntimeFailure
from image_builder.http import (
    RETRY_STATUSES,
    Deadline,
    RetriesExhausted,
    RetryPolicy,
    send_with_retries,
)
from image_builder.oci import DIGEST, Reference, split_host

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # the distribution spec's recommended limit
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024  # signature and attestation payloads
MAX_TOKEN_BYTES = 1024 * 1024  # a token service's answer
READ_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
# The check before a build: a registry that is up answers at once; a short connect timeout and
# two quick attempts tell a closed port or a dead host in seconds.
CHECK_CONNECT_TIMEOUT = 3.0
CHECK_BUDGET = 10.0
CHECK_ATTEMPTS = 2
AUTH_FILES_HINT = "check REGISTRY_AUTH_FILE or ~/.docker/config.json"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Manifest:
    digest: str
    media_type: str
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.data)
        except (ValueError, RecursionError):
            raise RuntimeFailure(f"manifest {self.digest} is not JSON") from None
        if not isinstance(value, dict):
            raise RuntimeFailure(f"manifest {self.digest} is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def image(self, *, where: str | None = None) -> wire.ImageManifest:
        """The image manifest's config, layers and annotations; a :class:`RegistryError` naming
        the field, under ``where`` (the reference it was read from; default: its digest)."""
        try:
            return wire.parse(wire.ImageManifest, self.json(), what="the manifest")
        except wire.WireError as exc:
            raise RegistryError(f"{where or f'manifest {self.digest}'}: {exc}") from None

    def entries(self, limit: int, *, where: str | None = None) -> tuple[wire.Descriptor, ...]:
        """The manifests an index lists (none for an image), at most ``limit`` of them; a
        :class:`RegistryError` naming the entry and field, under ``where`` (the reference it was
        read from; default: the index's digest)."""
        if not self.is_index:
            return ()
        where = where or f"index {self.digest}"
        try:
            return wire.parse(wire.ImageIndex, self.json(), what="", max_entries=limit).manifests
        except wire.WireError as exc:
            if exc.kind == "too_many":
                raise RegistryError(f"{where} {exc.detail}; refusing to read it") from None
            if exc.loc == ("manifests",):
                raise RegistryError(f"{where} has no list of manifests") from None
            raise RegistryError(f"{where} has a malformed entry: {exc}") from None


# --- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)


def auth_files(env: Mapping[str, str]) -> list[Path]:
    """Where buildah, skopeo and docker look for registry credentials, in their order."""
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_dir = (
        Path(env["DOCKER_CONFIG"])
        if env.get("DOCKER_CONFIG")
        else Path(env.get("HOME", "/root")) / ".docker"
    )
    files.append(docker_dir / "config.json")
    return files


def credentials_from_auth_files(env: Mapping[str, str]) -> Callable[[str], Credentials | None]:
    """Look up credentials the way buildah and docker do: ``$REGISTRY_AUTH_FILE``,
    ``$XDG_RUNTIME_DIR/containers/auth.json``, then ``$DOCKER_CONFIG``/``~/.docker/config.json``;
    ``credHelpers``/``credsStore`` run ``docker-credential-<helper> get``."""
    files = auth_files(env)

    def lookup(host: str) -> Credentials | None:
        for path in files:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            helper = (data.get("credHelpers") or {}).get(host) or data.get("credsStore")
            for key in (
                host,
                f"https://{host}",
                f"http://{host}",
                "https://index.docker.io/v1/" if host == "docker.io" else None,
            ):
                entry = (data.get("auths") or {}).get(key) if key else None
                if isinstance(entry, dict) and entry.get("auth"):
                    try:
                        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    return Credentials(user, password)
            if helper:
                return _from_helper(str(helper), host, env)
        return None

    return lookup


def _from_helper(helper: str, host: str, env: Mapping[str, str]) -> Credentials | None:
    from image_builder import proc

    result = proc.run(
        [f"docker-credential-{helper}", "get"], env=env, stdin=host, check=False, timeout=30.0
    )
    if result.returncode != 0:
        return None
    try:
        data = json.loads(result.output)
        return Credentials(str(data["Username"]), str(data["Secret"]))
    except (ValueError, KeyError, TypeError):
        return None


# --- the client --------------------------------------------------------------------------------


class RegistryError(RuntimeFailure):
    pass


class TokenRefused(RegistryError):
    """The registry's token service refused the credentials (401 or 403)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(RegistryError):
    """No connection to the registry ``host``: a closed port, a name that does not resolve, a
    host that does not answer, a failed TLS handshake; or something that is not a registry
    answers."""

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(message)
        self.host = host


class PushRefused(RegistryError):
    """The registry refuses the credentials, or refuses them a push to the repository."""


class RegistryClient:
    """A small, strict OCI distribution client. Plain HTTP only for hosts ``plain_http`` allows."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        credentials: Callable[[str], Credentials | None],
        plain_http: Callable[[str], bool],
        retry: RetryPolicy | None = None,
        max_entries: int = 64,
        resolve: Callable[[str], list[str]] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._http = http
        self._stopping = stopping
        self._credentials = credentials
        self._plain_http = plain_http
        self.max_entries = max_entries
        self._resolve = resolve or resolve_host
        # Time-budgeted: a 503 burst is waited out, and a request that timed out gets another
        # go (the per-request read timeout is half the budget).
        self._retry = retry or RetryPolicy(attempts=None, budget=60.0)
        self._tokens: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._deadline: Deadline | None = None
        self._connect_timeout = CONNECT_TIMEOUT

    def close(self) -> None:
        """Close the connections it keeps open."""
        self._http.close()

    @contextmanager
    def bounded(self, deadline: Deadline, *, connect: float = CONNECT_TIMEOUT) -> Iterator[None]:
        """Every request and retry inside ends by ``deadline``; a connection not made within
        ``connect`` seconds fails."""
        previous = self._deadline, self._connect_timeout
        self._deadline, self._connect_timeout = deadline, connect
        try:
            yield
        finally:
            self._deadline, self._connect_timeout = previous

    # --- the check before a build -----------------------------------------------------------------

    def check_push(self, repository: Reference) -> str | None:
        """Whether ``repository``'s registry answers and lets our credentials push there: the
        ``/v2/`` check with its auth challenge answered (a token asked for with the push scope),
        then a blob upload started and cancelled, which only push rights allow. Raises
        :class:`Unreachable` or :class:`PushRefused` with the cause; returns a notice when the
        answer tells neither way (a 503, a slow answer, an unexpected status), and the push then
        finds out with its own retries. Seconds, not minutes: a short connect timeout, at most
        two quick attempts."""
        host, name = repository.host, repository.repository
        scope = f"repository:{name}:pull,push"
        with self.bounded(Deadline(CHECK_BUDGET), connect=CHECK_CONNECT_TIMEOUT):
            ping = self._probe("GET", host, httpx.URL(f"{self._base(host)}/v2/"), scope)
            if isinstance(ping, str):
                return ping
            if ping.status_code == 401:
                self._answer_challenge(host, name, scope, ping)
                ping = self._probe("GET", host, httpx.URL(f"{self._base(host)}/v2/"), scope)
                if isinstance(ping, str):
                    return ping
                if ping.status_code == 401:
                    raise self._refused(host, name, ping)
            if ping.status_code in RETRY_STATUSES:
                return f"registry {host} answered the check with HTTP {ping.status_code}"
            if ping.status_code != 200:
                raise Unreachable(
                    f"registry {host} does not answer as an OCI registry (GET /v2/: HTTP "
                    f"{ping.status_code})",
                    host=host,
                )
            return self._probe_upload(host, name, scope)

    def _probe_upload(self, host: str, name: str, scope: str) -> str | None:
        """Start a blob upload, which needs push rights, and cancel it."""
        url = httpx.URL(f"{self._base(host)}/v2/{name}/blobs/uploads/")
        started = self._probe("POST", host, url, scope)
        if not isinstance(started, str) and started.status_code == 401:
            # A registry that lets anyone ping may still want credentials for a push.
            self._answer_challenge(host, name, scope, started)
            started = self._probe("POST", host, url, scope)
        if isinstance(started, str):
            return started
        status = started.status_code
        if status == 202:
            self._cancel_upload(host, started)
            return None
        if status == 401:
            raise self._refused(host, name, started)
        if status == 403:
            raise PushRefused(
                f"registry {host} does not let these credentials push to {name} (403"
                f"{_detail(started)}); ask for push rights to {name}, or {AUTH_FILES_HINT}"
            )
        return f"registry {host} answered the push check for {name} with HTTP {status}" + (
            f" ({_detail(started).removeprefix(': ')})" if _detail(started) else ""
        )

    def _answer_challenge(self, host: str, name: str, scope: str, response: httpx.Response) -> None:
        try:
            answered = self._authenticate(host, scope, response)
        except TokenRefused as exc:
            raise PushRefused(
                f"registry {host} refused the credentials for {name} ({exc.status}); "
                f"{AUTH_FILES_HINT}"
            ) from None
        if not answered and self._credentials(host) is None:
            raise self._refused(host, name, response)

    def _refused(self, host: str, name: str, response: httpx.Response) -> PushRefused:
        """What a 401 after our credentials (or for want of any) means."""
        challenge = response.headers.get("www-authenticate", "")
        error = dict(_CHALLENGE_PARAM.findall(challenge.partition(" ")[2])).get("error", "")
        if self._credentials(host) is None:
            return PushRefused(
                f"registry {host} wants credentials to push to {name} (401), and none were found "
                f"for {host}; log in (buildah login {host}), or {AUTH_FILES_HINT}"
            )
        if error == "insufficient_scope":
            return PushRefused(
                f"registry {host} does not let these credentials push to {name} (401 "
                f"insufficient_scope); ask for push rights to {name}, or {AUTH_FILES_HINT}"
            )
        return PushRefused(
            f"registry {host} refused the credentials for {name} (401); {AUTH_FILES_HINT}"
        )

    def _probe(self, method: str, host: str, url: httpx.URL, scope: str) -> httpx.Response | str:
        """One request of the check, tried twice when no connection was made. Raises
        :class:`Unreachable` when none could be; a failure after connecting is a notice."""
        cause = ""
        for attempt in range(CHECK_ATTEMPTS):
            if self._stopping():
                raise RegistryError(f"{method} {url} not sent: image-builder is stopping")
            if attempt:
                time.sleep(0.2)
            headers = {}
            auth = self._auth_header(host, scope)
            if auth:
                headers["Authorization"] = auth
            try:
                return self._exchange(method, url, None, headers=headers)
            except httpx.ConnectTimeout:
                cause = f"no connection within {CHECK_CONNECT_TIMEOUT:.0f} s"
            except httpx.ConnectError as exc:
                cause = _connect_cause(exc)
            except httpx.TimeoutException:
                return f"registry {host} did not answer the check within {CHECK_BUDGET:.0f} s"
            except httpx.TransportError as exc:
                return f"registry {host} broke off the check ({exc.__class__.__name__}: {exc})"
            except httpx.HTTPError as exc:
                raise Unreachable(f"registry {host} cannot be checked ({exc})", host=host) from None
        raise Unreachable(f"registry {host} is unreachable ({cause})", host=host)

    def _cancel_upload(self, host: str, started: httpx.Response) -> None:
        """Best effort: a registry drops an abandoned upload on its own after a while."""
        location = started.headers.get("location")
        if not location:
            return
        try:
            url = httpx.URL(self._base(host)).join(location)
            self.check_target(host, url)
            # The upload's own credentials, and only to the registry's own host.
            own = url.netloc.decode() == httpx.URL(self._base(host)).netloc.decode()
            auth = started.request.headers.get("authorization") if own else None
            self._exchange("DELETE", url, None, headers={"Authorization": auth} if auth else {})
        except (httpx.HTTPError, RegistryError) as exc:
            log.debug("cancelling the check's upload on %s failed: %s", host, exc)

    # --- manifests ------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch by tag or digest; a digest reference must match the bytes received."""
        target = ref.digest or ref.tag or "latest"
        response = self._request(
            "GET",
            ref,
            f"manifests/{target}",
            headers={"Accept": MANIFEST_ACCEPT},
            limit=MAX_MANIFEST_BYTES,
        )
        if response.status_code == 404:
            raise RegistryError(f"{ref} does not exist")
        self._check(response, f"fetching the manifest of {ref}")
        data = response.content
        digest = sha256_digest(data)
        if ref.digest and digest != ref.digest:
            raise RegistryError(
                f"{ref.name} served a manifest whose digest is {digest}, not {ref.digest}"
            )
        header = response.headers.get("docker-content-digest")
        if header and header != digest:
            raise RegistryError(f"{ref} claims digest {header} but its content hashes to {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        manifest = Manifest(digest=digest, media_type=media_type, data=data)
        if not media_type or media_type == "application/json":
            media_type = str(manifest.json().get("mediaType", OCI_MANIFEST))
        return Manifest(digest=digest, media_type=media_type, data=data)

    def manifest_digest(self, ref: Reference) -> str | None:
        """HEAD a manifest: its digest, or ``None`` when it does not exist."""
        target = ref.digest or ref.tag or "latest"
        response = self._request(
            "HEAD", ref, f"manifests/{target}", headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 404:
            return None
        self._check(response, f"checking {ref}")
        digest = str(response.headers.get("docker-content-digest", ""))
        if digest and not DIGEST.fullmatch(digest):
            raise RegistryError(f"{ref.name} answered a malformed digest for {ref}")
        return digest or self.get_manifest(ref).digest

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> str:
        target = ref.digest or ref.tag
        response = self._request(
            "PUT", ref, f"manifests/{target}", content=data, headers={"Content-Type": media_type}
        )
        self._check(response, f"uploading the manifest {ref}")
        digest = sha256_digest(data)
        header = response.headers.get("docker-content-digest")
        if header and header != digest:
            raise RegistryError(f"{ref.name} stored the manifest as {header}, expected {digest}")
        return digest

    # --- blobs ----------------------------------------------------------------------------------

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        response = self._request("HEAD", ref, f"blobs/{digest}")
        if response.status_code == 404:
            return False
        self._check(response, f"checking blob {digest} in {ref.name}")
        return True

    def get_blob(self, ref: Reference, digest: str, *, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
        """A small blob (a config, a signature payload), at most ``limit`` bytes."""
        if not DIGEST.fullmatch(digest):
            raise RegistryError(f"{ref.name} names a blob by {digest!r}, which is not a digest")
        response = self._request("GET", ref, f"blobs/{digest}", limit=limit)
        if response.status_code == 404:
            raise RegistryError(f"blob {digest} does not exist in {ref.name}")
        self._check(response, f"fetching blob {digest} from {ref.name}")
        if sha256_digest(response.content) != digest:
            raise RegistryError(f"blob {digest} from {ref.name} does not match its digest")
        return response.content

    def put_blob(self, ref: Reference, data: bytes) -> str:
        """Upload ``data`` unless the repository already has it (checked with HEAD first)."""
        digest = sha256_digest(data)
        if self.blob_exists(ref, digest):
            return digest
        start = self._request("POST", ref, "blobs/uploads/")
        self._check(start, f"starting a blob upload to {ref.name}")
        location = start.headers.get("location")
        if not location:
            raise RegistryError(f"{ref.name} started an upload without a Location")
        try:
            url = httpx.URL(self._base(ref.host)).join(location)
        except httpx.InvalidURL as exc:
            raise RegistryError(
                f"{ref.name} started an upload at an invalid address ({exc})"
            ) from None
        self.check_target(ref.host, url)
        params = dict(url.params)
        params["digest"] = digest
        response = self._send(
            "PUT",
            ref,
            url.copy_with(params=params),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(response, f"uploading blob {digest} to {ref.name}")
        return digest

    # --- plumbing -------------------------------------------------------------------------------

    def _base(self, host: str) -> str:
        api_host = "registry-1.docker.io" if host == "docker.io" else host
        scheme = "http" if self._plain_http(host) else "https"
        return f"{scheme}://{api_host}"

    def _request(self, method: str, ref: Reference, path: str, **kwargs: Any) -> httpx.Response:
        url = httpx.URL(f"{self._base(ref.host)}/v2/{ref.repository}/{path}")
        return self._send(method, ref, url, **kwargs)

    def _send(
        self,
        method: str,
        ref: Reference,
        url: httpx.URL,
        *,
        limit: int | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        scope = f"repository:{ref.repository}:pull" + (
            ",push" if method in ("PUT", "POST", "PATCH") else ""
        )
        # Credentials belong to the registry's own host; an upload Location elsewhere gets none.
        own = url.netloc.decode() == httpx.URL(self._base(ref.host)).netloc.decode()

        def exchange() -> httpx.Response:
            if self._stopping():
                raise RegistryError(f"{method} {url} not sent: image-builder is stopping")
            headers = dict(kwargs.get("headers") or {})
            auth = self._auth_header(ref.host, scope) if own else None
            if auth:
                headers["Authorization"] = auth
            try:
                response = self._exchange(method, url, limit, **{**kwargs, "headers": headers})
                if (
                    own
                    and response.status_code == 401
                    and self._authenticate(ref.host, scope, response)
                ):
                    headers["Authorization"] = self._auth_header(ref.host, scope) or ""
                    response = self._exchange(method, url, limit, **{**kwargs, "headers": headers})
            except httpx.TransportError:
                raise  # send_with_retries judges these
            except httpx.InvalidURL as exc:
                raise RegistryError(
                    f"{ref.host} sent us to an invalid address ({exc}); refusing to follow"
                ) from None
            except httpx.HTTPError as exc:  # too many redirects, an undecodable body
                raise RegistryError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
            return response

        try:
            # Every request here is safe to repeat: a PUT writes the same content or tag again,
            # and a POST only opens an upload session, which the registry drops when unused.
            return send_with_retries(
                exchange, what=f"{method} {url}", policy=self._retry, deadline=self._deadline
            )
        except RetriesExhausted as exc:
            raise RegistryError(f"{ref.name}: {exc.last} (gave up after retries)") from None

    def _exchange(
        self, method: str, url: httpx.URL, limit: int | None, **kwargs: Any
    ) -> httpx.Response:
        """One request; with ``limit``, a body longer than that is refused before it is read
        whole (a registry decides how much it sends, not how much we keep)."""
        if self._deadline is not None:
            left = max(self._deadline.remaining(), 0.1)
            kwargs["timeout"] = httpx.Timeout(
                min(READ_TIMEOUT, left), connect=min(self._connect_timeout, left)
            )
        if limit is None:
            return self._http.request(method, url, **kwargs)
        auth = kwargs.pop("auth", None)
        request = self._http.build_request(method, url, **kwargs)
        response = self._http.send(request, stream=True, auth=auth)
        try:
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                raise RegistryError(
                    f"{url.host} sent {length} bytes, more than the {limit} allowed"
                )
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise RegistryError(f"{url.host} sent more than the {limit} bytes allowed")
        finally:
            response.close()
        # The body is decoded already: the rebuilt response must not decode it again.
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            response.status_code, headers=headers, content=bytes(body), request=request
        )

    def _auth_header(self, host: str, scope: str) -> str | None:
        with self._lock:
            return self._tokens.get((host, scope)) or self._tokens.get((host, "*"))

    def _authenticate(self, host: str, scope: str, response: httpx.Response) -> bool:
        challenge = response.headers.get("www-authenticate", "")
        creds = self._credentials(host)
        kind, _, params_text = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(params_text))
        if kind.lower() == "basic":
            if creds is None:
                return False
            basic = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
            with self._lock:
                self._tokens[(host, "*")] = f"Basic {basic}"
            return True
        if kind.lower() != "bearer" or "realm" not in params:
            return False
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            realm = httpx.URL(params["realm"])
        except httpx.InvalidURL as exc:
            raise RegistryError(f"{host} names an invalid token service ({exc})") from None
        self.check_target(host, realm)
        if realm.scheme != "https" and not self._plain_http(host):
            raise RegistryError(
                f"{host} names a plain-HTTP token service ({realm.host}); refusing to send "
                "credentials over it"
            )
        # Credentials go to the token service only when it is the registry's own host.
        auth = (creds.username, creds.password) if creds and _same_site(host, realm) else None
        try:
            got = self._exchange("GET", realm.copy_merge_params(query), MAX_TOKEN_BYTES, auth=auth)
        except httpx.HTTPError as exc:
            raise RegistryError(f"token service {realm.host} for {host} failed: {exc}") from None
        if got.status_code in (401, 403):
            raise TokenRefused(
                f"token service for {host} refused the request ({got.status_code}); check the "
                "registry credentials in your auth file",
                status=got.status_code,
            )
        if got.status_code != 200:
            raise RegistryError(
                f"token service for {host} refused the request ({got.status_code}); check the "
                "registry credentials in your auth file"
            )
        token: object = None
        try:
            body = got.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service for {host} returned no token")
        with self._lock:
            self._tokens[(host, scope)] = f"Bearer {token}"
        return True

    def check_target(self, source: str, url: httpx.URL) -> None:
        """Refuse to be sent from registry ``source`` (host[:port]) to a non-canonical address,
        or to another host that resolves to a loopback, private or link-local address; only a
        registry the config names as loopback or insecure may send us there."""
        host = url.host
        if _non_canonical_ipv4(host):
            raise RegistryError(
                f"{source} sent us to {host!r}, an IPv4 address in a non-canonical form; refusing "
                "to follow"
            )
        if host == split_host(source)[0] or self._plain_http(source):
            return
        # The name as it goes on the wire (IDNA-encoded), which is what the connection resolves.
        addresses = self._resolve(url.raw_host.decode("ascii"))
        if not addresses:
            raise RegistryError(
                f"{source} sent us to {host}, which does not resolve; refusing to follow"
            )
        for address in addresses:
            if _internal(address):
                raise RegistryError(
                    f"{source} sent us to {host} ({address}), a loopback, private or link-local "
                    "address of another host; refusing to follow"
                )

    def refuse_internal_redirects(self, response: httpx.Response) -> None:
        """An httpx response hook: a registry may redirect blob downloads to storage, but never
        to another host's internal address."""
        if response.is_redirect:
            target = response.request.url.join(response.headers.get("location", ""))
            self.check_target(response.request.url.netloc.decode(), target)

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code < 300:
            return
        detail = _errors(response)
        if detail is None:
            detail = response.text[:200]
        raise RegistryError(f"{what} failed: HTTP {response.status_code} {detail}".strip())


def ping(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``base_url`` answers the distribution API's ``/v2/`` check (200 or 401)."""
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/v2/", timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 401)


def _errors(response: httpx.Response) -> str | None:
    """The distribution API's error body as ``CODE: message; ...``; ``None`` when the body is not
    JSON."""
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    return "; ".join(
        f"{e.get('code')}: {e.get('message')}"
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    )


def _detail(response: httpx.Response) -> str:
    """``": CODE: message"`` from a registry's error body, or nothing."""
    text = _errors(response)
    return f": {text[:200]}" if text else ""


def _connect_cause(exc: httpx.ConnectError) -> str:
    """Why no connection was made, in a few words."""
    text = str(exc)
    lowered = text.lower()
    if "refused" in lowered:
        return "connection refused"
    if any(
        words in lowered
        for words in ("name or service not known", "name resolution", "nodename nor servname")
    ):
        return "its name does not resolve"
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return f"TLS handshake failed: {text}"
    if "unreachable" in lowered:
        return "no route to it"
    return text or exc.__class__.__name__


def resolve_host(host: str) -> list[str]:
    """Every address ``host`` resolves to (an address resolves to itself)."""
    import socket

    try:
        infos = socket.getaddrinfo(host.strip("[]"), None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return sorted({str(info[4][0]) for info in infos})


def _internal(address: str) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # Not globally routable: private, loopback, link-local, shared (100.64/10, where some clouds
    # keep their metadata service), reserved, unspecified; and multicast.
    return not ip.is_global or ip.is_multicast


def _non_canonical_ipv4(host: str) -> bool:
    """``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``: forms the C resolver reads as
    IPv4 addresses, but no canonical dotted quad."""
    import ipaddress
    import socket

    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return False
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


# A registry whose token service lives on a sibling host (Docker Hub's auth.docker.io).
_TOKEN_HOSTS = {"docker.io": "auth.docker.io", "registry-1.docker.io": "auth.docker.io"}


def _same_site(registry: str, realm: httpx.URL) -> bool:
    name = split_host(registry)[0]
    return realm.host in (name, _TOKEN_HOSTS.get(name))


def make_client(
    env: Mapping[str, str],
    plain_http: Callable[[str], bool],
    *,
    max_entries: int = 64,
    anonymous: bool = False,
) -> RegistryClient:
    """A client with the credentials of ``env``'s auth files; ``anonymous``: with none (for
    reading what a Dockerfile names, which the sandbox pulls without credentials too)."""
    from image_builder.http import tls_context

    http = httpx.Client(
        verify=tls_context(),
        timeout=httpx.Timeout(READ_TIMEOUT, connect=10.0),
        follow_redirects=True,
        trust_env=False,
    )
    from image_builder import proc

    client = RegistryClient(
        http=http,
        credentials=(lambda host: None) if anonymous else credentials_from_auth_files(env),
        plain_http=plain_http,
        max_entries=max_entries,
        stopping=lambda: proc.CHILDREN.stopping,
    )
    http.event_hooks["response"] = [client.refuse_internal_redirects]
    return client
