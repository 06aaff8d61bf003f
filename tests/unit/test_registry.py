from __future__ import annotations

import gzip
import hashlib
import json

import httpx
import pytest

from image_builder.errors import InputError
from image_builder.http import RetryPolicy
from image_builder.oci import parse_reference
from image_builder.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    RegistryClient,
    RegistryError,
)

# Names a test may send the client to, and what they resolve to.
DNS = {
    "registry.example": ["151.101.1.10"],
    "storage.example": ["151.101.1.11"],
    "auth.other.example": ["151.101.1.12"],
    "localhost": ["127.0.0.1", "::1"],
    "metadata.internal": ["169.254.169.254"],
    "rebind.example": ["151.101.1.13", "10.0.0.7"],  # one public, one private address
    "xn--zca.evil.example": ["127.0.0.1"],  # ß.evil.example on the wire
    "ss.evil.example": ["151.101.1.14"],  # what older IDNA rules make of it
    "nowhere.example": [],
}


ONE, TWO = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class FakeRegistry:
    """An httpx transport for one registry: ``routes`` maps a path to a response; every request
    is recorded with its Authorization header."""

    def __init__(self, routes: dict[str, httpx.Response]) -> None:
        self.routes = routes
        self.seen: list[tuple[str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((str(request.url), request.headers.get("authorization")))
        key = f"{request.url.host}{request.url.path}"
        return self.routes.get(key, httpx.Response(404, json={"errors": []}))


def client(
    fake: FakeRegistry,
    *,
    plain: tuple[str, ...] = (),
    credentials: Credentials | None = None,
    max_entries: int = 64,
) -> RegistryClient:
    http = httpx.Client(transport=httpx.MockTransport(fake), follow_redirects=True)
    registry = RegistryClient(
        http=http,
        credentials=lambda host: credentials,
        plain_http=lambda host: host in plain,
        retry=RetryPolicy(attempts=1, budget=0.0),
        max_entries=max_entries,
        resolve=lambda host: DNS.get(host, [host]),
    )
    http.event_hooks["response"] = [registry.refuse_internal_redirects]
    return registry


def redirecting_to(location: str) -> FakeRegistry:
    return FakeRegistry(
        {f"registry.example/v2/a/blobs/{ONE}": httpx.Response(307, headers={"Location": location})}
    )


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254 (169.254.169.254), a loopback",
        ),
        ("http://metadata.internal/latest/", "metadata.internal (169.254.169.254), a loopback"),
        ("http://10.0.0.5/blob", "10.0.0.5 (10.0.0.5), a loopback"),
        ("http://127.0.0.1:8080/admin", "127.0.0.1 (127.0.0.1), a loopback"),
        ("http://localhost:8080/admin", "localhost (127.0.0.1), a loopback"),
        ("http://rebind.example/x", "rebind.example (10.0.0.7), a loopback"),
        ("http://[::1]/x", "::1 (::1), a loopback"),
        ("http://100.100.100.200/x", "100.100.100.200 (100.100.100.200), a loopback"),
        ("http://nowhere.example/x", "nowhere.example, which does not resolve"),
        ("http://[::ffff:127.0.0.1]/x", "::ffff:127.0.0.1 (::ffff:127.0.0.1), a loopback"),
        ("http://127.1/x", "'127.1', an IPv4 address in a non-canonical form"),
        ("http://2130706433/x", "'2130706433', an IPv4 address in a non-canonical form"),
        ("http://0x7f000001/x", "'0x7f000001', an IPv4 address in a non-canonical form"),
        ("http://0177.0.0.1/x", "an invalid address (Invalid IPv4 address: '0177.0.0.1')"),
        ("http://0x7f.1/x", "'0x7f.1', an IPv4 address in a non-canonical form"),
    ],
)
def test_redirects_to_internal_addresses_are_refused(location: str, problem: str) -> None:
    fake = redirecting_to(location)
    with pytest.raises(RegistryError) as caught:
        client(fake).get_blob(parse_reference("registry.example/a:x"), ONE)
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith(f"registry.example sent us to {problem}")
    assert str(caught.value).endswith("refusing to follow")
    assert len(fake.seen) == 1  # the redirect was never followed


def test_a_unicode_host_is_checked_as_it_goes_on_the_wire() -> None:
    """ß.evil.example connects as xn--zca.evil.example; older IDNA rules would look up
    ss.evil.example instead, a public address."""
    with pytest.raises(RegistryError) as caught:
        client(FakeRegistry({})).check_target(
            "registry.example", httpx.URL("http://ß.evil.example/x")
        )
    assert str(caught.value) == (
        "registry.example sent us to ß.evil.example (127.0.0.1), a loopback, private or "
        "link-local address of another host; refusing to follow"
    )


def test_a_registry_named_loopback_may_redirect_to_loopback_but_not_to_odd_forms() -> None:
    fake = FakeRegistry(
        {
            f"127.0.0.1/v2/a/blobs/{ONE}": httpx.Response(
                307, headers={"Location": "http://127.0.0.2:5000/blob"}
            ),
            f"127.0.0.1/v2/a/blobs/{TWO}": httpx.Response(
                307, headers={"Location": "http://127.1:5000/blob"}
            ),
        }
    )
    registry = client(fake, plain=("127.0.0.1:5000",))
    ref = parse_reference("127.0.0.1:5000/a:x")
    with pytest.raises(RegistryError, match="does not exist"):  # followed, then 404
        registry.get_blob(ref, ONE)
    with pytest.raises(RegistryError, match=r"'127\.1', an IPv4 address in a non-canonical form"):
        registry.get_blob(ref, TWO)


def test_ordinary_redirects_pass() -> None:
    fake = redirecting_to("https://storage.example/blob?sig=1")
    fake.routes["storage.example/blob"] = httpx.Response(200, content=b"{}")
    digest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    fake.routes[f"registry.example/v2/a/blobs/{digest}"] = fake.routes.pop(
        f"registry.example/v2/a/blobs/{ONE}"
    )
    assert client(fake).get_blob(parse_reference("registry.example/a:x"), digest) == b"{}"


def challenge(realm: str) -> httpx.Response:
    return httpx.Response(
        401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'}
    )


def test_a_plain_http_token_realm_gets_no_credentials() -> None:
    fake = FakeRegistry(
        {"registry.example/v2/a/manifests/x": challenge("http://registry.example/token")}
    )
    with pytest.raises(RegistryError) as caught:
        client(fake, credentials=Credentials("robot", "hunter2pw")).manifest_digest(
            parse_reference("registry.example/a:x")
        )
    assert caught.value.exit_code == 1
    assert str(caught.value) == (
        "registry.example names a plain-HTTP token service (registry.example); refusing to send "
        "credentials over it"
    )
    assert [url for url, _ in fake.seen] == ["https://registry.example/v2/a/manifests/x"]


@pytest.mark.parametrize(
    ("realm", "sends_credentials"),
    [("https://registry.example/token", True), ("https://auth.other.example/token", False)],
)
def test_credentials_go_only_to_the_registrys_own_host(realm: str, sends_credentials: bool) -> None:
    host = httpx.URL(realm).host
    fake = FakeRegistry(
        {
            "registry.example/v2/a/manifests/x": challenge(realm),
            f"{host}/token": httpx.Response(200, json={"token": "t0ken"}),
        }
    )
    with pytest.raises(RegistryError, match="HTTP 401"):  # this fake never lets anyone in
        client(fake, credentials=Credentials("robot", "hunter2pw")).manifest_digest(
            parse_reference("registry.example/a:x")
        )
    token_requests = [auth for url, auth in fake.seen if "/token" in url]
    assert len(token_requests) == 1
    assert (token_requests[0] is not None) is sends_credentials


def test_an_upload_location_on_another_host_gets_no_credentials() -> None:
    data = b"blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    class AsksForCredentials(FakeRegistry):
        """The registry asks for basic credentials before it takes an upload."""

        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "registry.example" and not request.headers.get("authorization"):
                self.seen.append((str(request.url), None))
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return super().__call__(request)

    fake = AsksForCredentials(
        {
            "registry.example/v2/a/blobs/uploads/": httpx.Response(
                202, headers={"Location": "https://storage.example/upload/1"}
            ),
            "storage.example/upload/1": httpx.Response(201),
        }
    )
    registry = client(fake, credentials=Credentials("robot", "hunter2pw"))
    registry.put_blob(parse_reference("registry.example/a:x"), data)
    assert fake.seen[-1] == (
        f"https://storage.example/upload/1?digest={digest.replace(':', '%3A')}",
        None,
    )
    sent = [auth for url, auth in fake.seen if "registry.example" in url]
    assert sent[0] is None  # asked once, then given to the registry's own host every time
    assert set(sent[1:]) == {"Basic cm9ib3Q6aHVudGVyMnB3"}


@pytest.mark.parametrize("chunked", [False, True])
def test_a_manifest_over_4_mib_is_refused_without_reading_it_whole(chunked: bool) -> None:
    size = 4 * 1024 * 1024 + 1
    body = (b"x" * 65536 for _ in range(size // 65536 + 1)) if chunked else b"x" * size
    fake = FakeRegistry({"registry.example/v2/a/manifests/x": httpx.Response(200, content=body)})
    with pytest.raises(RegistryError) as caught:
        client(fake).get_manifest(parse_reference("registry.example/a:x"))
    assert caught.value.exit_code == 1
    assert str(caught.value) == (
        f"registry.example sent {size} bytes, more than the 4194304 allowed"
        if not chunked
        else "registry.example sent more than the 4194304 bytes allowed"
    )


def test_an_index_with_too_many_entries_is_refused() -> None:
    entry = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1}
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * 65})
    fake = FakeRegistry(
        {
            "registry.example/v2/a/manifests/x": httpx.Response(
                200, content=index.encode(), headers={"Content-Type": OCI_INDEX}
            )
        }
    )
    manifest = client(fake, max_entries=64).get_manifest(parse_reference("registry.example/a:x"))
    with pytest.raises(RegistryError) as caught:
        manifest.entries(64)
    assert str(caught.value) == (
        f"index {manifest.digest} lists 65 manifests, more than max-manifest-entries (64); "
        "refusing to read it"
    )
    assert len(manifest.entries(65)) == 65


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ghcr.io/org/app:v1", ("ghcr.io", "org/app", "v1", None)),
        ("localhost:5000/app", ("localhost:5000", "app", "latest", None)),
        ("busybox", ("docker.io", "library/busybox", "latest", None)),
        ("r.example/a/b@sha256:" + "a" * 64, ("r.example", "a/b", None, "sha256:" + "a" * 64)),
        # docker's rules, shared with the Dockerfile reader
        ("docker.io/busybox", ("docker.io", "library/busybox", "latest", None)),
        ("index.docker.io/org/x:1", ("docker.io", "org/x", "1", None)),
        ("Registry/x", ("Registry", "x", "latest", None)),
        ("[::1]:5000/x", ("[::1]:5000", "x", "latest", None)),
    ],
)
def test_parse_reference(text: str, expected: tuple[str | None, ...]) -> None:
    ref = parse_reference(text)
    assert (ref.host, ref.repository, ref.tag, ref.digest) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("r.example/a@sha256:zz", "has a malformed digest"),
        ("r.example/A/B:v1", "is not a valid OCI reference"),
        ("r.example/a:bad tag", "has an invalid tag"),
        ("bad host.example/a:1", "is not a valid OCI reference"),
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_reference(text)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([{"digest": "sha256:" + "a" * 64}], "has a malformed entry"),  # no size
        (["sha256:" + "a" * 64], "has a malformed entry"),
        ([{"digest": "../../x", "size": 1}], "has a malformed entry"),
        (
            [{"digest": "sha256:" + "a" * 64, "size": 1, "platform": "linux"}],
            "has a malformed entry",
        ),
        ({"a": 1}, "has no list of manifests"),
    ],
)
def test_hostile_index_entries_are_registry_errors(body: object, problem: str) -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": body})
    fake = FakeRegistry(
        {
            "registry.example/v2/a/manifests/x": httpx.Response(
                200, content=index.encode(), headers={"Content-Type": OCI_INDEX}
            )
        }
    )
    manifest = client(fake).get_manifest(parse_reference("registry.example/a:x"))
    with pytest.raises(RegistryError, match=problem) as caught:
        manifest.entries(64)
    assert caught.value.exit_code == 1


def test_a_gzip_encoded_manifest_is_read_once_and_capped_after_decoding() -> None:
    small = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
    bomb = gzip.compress(b" " * (5 * 1024 * 1024))  # 5 MiB of JSON whitespace, 5 KiB on the wire
    fake = FakeRegistry(
        {
            "registry.example/v2/a/manifests/small": httpx.Response(
                200, content=gzip.compress(small), headers={"Content-Encoding": "gzip"}
            ),
            "registry.example/v2/a/manifests/bomb": httpx.Response(
                200, content=bomb, headers={"Content-Encoding": "gzip"}
            ),
        }
    )
    registry = client(fake)
    got = registry.get_manifest(parse_reference("registry.example/a:small"))
    assert got.data == small
    assert got.media_type == OCI_MANIFEST
    with pytest.raises(RegistryError) as caught:
        registry.get_manifest(parse_reference("registry.example/a:bomb"))
    assert str(caught.value) == "registry.example sent more than the 4194304 bytes allowed"


@pytest.mark.parametrize(
    ("routes", "problem"),
    [
        (
            {
                "registry.example/v2/a/manifests/x": challenge("https://registry.example/token"),
                "registry.example/token": httpx.Response(200, json=["not", "an", "object"]),
            },
            "token service for registry.example returned no token",
        ),
        (
            {"registry.example/v2/a/manifests/x": httpx.Response(400, json=["x"])},
            "checking registry.example/a:x failed: HTTP 400",
        ),
        (
            {
                "registry.example/v2/a/manifests/x": httpx.Response(
                    307, headers={"Location": "/v2/a/manifests/x"}
                )
            },
            "TooManyRedirects",
        ),
    ],
)
def test_hostile_answers_are_registry_errors(
    routes: dict[str, httpx.Response], problem: str
) -> None:
    with pytest.raises(RegistryError, match=problem) as caught:
        client(FakeRegistry(routes), credentials=Credentials("robot", "pw")).manifest_digest(
            parse_reference("registry.example/a:x")
        )
    assert caught.value.exit_code == 1
