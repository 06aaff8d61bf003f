"""The OCI distribution client: references, auth (Bearer challenge and basic), manifests and
blobs, with retries. Only this module talks to registries over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from image_builder.errors import RuntimeFailure
from image_builder.http import (
    RETRY_STATUSES,
    Deadline,
    RetryableError,
    RetryPolicy,
    retry_after_seconds,
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
        except ValueError:
            raise RuntimeFailure(f"manifest {self.digest} is not JSON") from None
        if not isinstance(value, dict):
            raise RuntimeFailure(f"manifest {self.digest} is not a JSON object")
        return value

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def children(self, limit: int) -> list[tuple[str, int, dict[str, Any]]]:
        """``(digest, size, platform)`` for each manifest an index lists (at most ``limit``)."""
        if not self.is_index:
            return []
        entries = self.json().get("manifests", [])
        if not isinstance(entries, list):
            raise RegistryError(f"index {self.digest} has no list of manifests")
        if len(entries) > limit:
            raise RegistryError(
                f"index {self.digest} lists {len(entries)} manifests, more than "
                f"max-manifest-entries ({limit}); refusing to read it"
            )
        out = []
        for entry in entries:
            digest = entry.get("digest") if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            platform = entry.get("platform") if isinstance(entry, dict) else None
            if (
                not isinstance(digest, str)
                or not DIGEST.fullmatch(digest)
                or not isinstance(size, int)
                or isinstance(size, bool)
                or not isinstance(platform, (dict, type(None)))
            ):
                raise RegistryError(
                    f"index {self.digest} has a malformed entry (needs a sha256 digest, a size "
                    "and an optional platform object)"
                )
            out.append((digest, size, dict(platform or {})))
        return out


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

    @contextmanager
    def bounded(self, deadline: Deadline) -> Iterator[None]:
        """Every request and retry inside ends by ``deadline``."""
        previous, self._deadline = self._deadline, deadline
        try:
            yield
        finally:
            self._deadline = previous

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

        def attempt() -> httpx.Response:
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
            except httpx.TransportError as exc:
                raise RetryableError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise RegistryError(
                    f"{ref.host} sent us to an invalid address ({exc}); refusing to follow"
                ) from None
            except httpx.HTTPError as exc:  # too many redirects, an undecodable body
                raise RegistryError(f"{method} {url}: {exc.__class__.__name__}: {exc}") from None
            if response.status_code in RETRY_STATUSES:
                raise RetryableError(
                    f"{method} {url} answered {response.status_code}",
                    retry_after=retry_after_seconds(response),
                )
            return response

        try:
            return self._retry.run(attempt, deadline=self._deadline)
        except RetryableError as exc:
            raise RegistryError(f"{ref.name}: {exc} (gave up after retries)") from None

    def _exchange(
        self, method: str, url: httpx.URL, limit: int | None, **kwargs: Any
    ) -> httpx.Response:
        """One request; with ``limit``, a body longer than that is refused before it is read
        whole (a registry decides how much it sends, not how much we keep)."""
        if self._deadline is not None:
            left = max(self._deadline.remaining(), 0.1)
            kwargs["timeout"] = httpx.Timeout(min(READ_TIMEOUT, left), connect=min(10.0, left))
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
        detail = ""
        try:
            body = response.json()
            errors = body.get("errors") if isinstance(body, dict) else None
            detail = "; ".join(
                f"{e.get('code')}: {e.get('message')}"
                for e in (errors if isinstance(errors, list) else [])
                if isinstance(e, dict)
            )
        except ValueError:
            detail = response.text[:200]
        raise RegistryError(f"{what} failed: HTTP {response.status_code} {detail}".strip())


def ping(base_url: str, *, timeout: float = 2.0) -> bool:
    """Whether ``base_url`` answers the distribution API's ``/v2/`` check (200 or 401)."""
    try:
        with urllib.request.urlopen(f"{base_url.rstrip('/')}/v2/", timeout=timeout) as response:  # noqa: S310 - our own http(s) URL
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, OSError, ValueError):
        return False


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
    env: Mapping[str, str], plain_http: Callable[[str], bool], *, max_entries: int = 64
) -> RegistryClient:
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
        credentials=credentials_from_auth_files(env),
        plain_http=plain_http,
        max_entries=max_entries,
        stopping=lambda: proc.CHILDREN.stopping,
    )
    http.event_hooks["response"] = [client.refuse_internal_redirects]
    return client
