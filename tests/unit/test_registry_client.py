"""RegistryClient against an in-memory registry behind httpx.MockTransport: manifests, blobs and
the upload flow, Bearer and Basic auth, retries, refusals, limits and the stop check."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import httpx
import pytest

from image_builder.http import Deadline, RetryPolicy
from image_builder.oci import Reference
from image_builder.registry import (
    OCI_INDEX,
    OCI_MANIFEST,
    Credentials,
    RegistryClient,
    RegistryError,
    TokenRefused,
)
from tests.support.mock_registry import DistributionApi, digest_of

HOST = "registry.example"
REF = Reference(host=HOST, repository="team/app", tag="v1")
ROBOT = Credentials("robot", "s3cret-pw")
BASIC_AUTH = "Basic " + base64.b64encode(b"robot:s3cret-pw").decode()
DNS = {
    HOST: ["151.101.1.10"],
    "storage.example": ["151.101.1.11"],
    "metadata.example": ["169.254.169.254"],
}


def client(
    fake: Callable[[httpx.Request], httpx.Response],
    *,
    credentials: Credentials | None = None,
    attempts: int = 3,
    stopping: Callable[[], bool] = lambda: False,
) -> RegistryClient:
    http = httpx.Client(transport=httpx.MockTransport(fake), follow_redirects=True)
    registry = RegistryClient(
        http=http,
        credentials=lambda host: credentials,
        plain_http=lambda host: False,
        retry=RetryPolicy(attempts=attempts, base_delay=0.0, max_delay=0.0, budget=5.0),
        resolve=lambda host: DNS.get(host, []),
        stopping=stopping,
    )
    http.event_hooks["response"] = [registry.refuse_internal_redirects]
    return registry


MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()


# --- manifests and blobs -------------------------------------------------------------------------


def test_a_manifest_put_by_tag_is_read_back_by_tag_and_by_digest() -> None:
    fake = DistributionApi()
    registry = client(fake)
    digest = registry.put_manifest(REF, MANIFEST, OCI_MANIFEST)
    assert digest == digest_of(MANIFEST)
    by_tag = registry.get_manifest(REF)
    by_digest = registry.get_manifest(REF.with_digest(digest))
    assert (by_tag.digest, by_tag.media_type, by_tag.data) == (digest, OCI_MANIFEST, MANIFEST)
    assert by_digest == by_tag
    assert registry.manifest_digest(REF) == digest
    assert fake.seen[0].headers["content-type"] == OCI_MANIFEST


def test_an_index_without_a_content_type_takes_its_media_type_from_the_body() -> None:
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()
    fake = DistributionApi()
    fake.manifests["v1"] = (index, "application/json")
    manifest = client(fake).get_manifest(REF)
    assert manifest.media_type == OCI_INDEX
    assert manifest.is_index


def test_a_manifest_whose_bytes_do_not_match_the_digest_asked_for_is_refused() -> None:
    fake = DistributionApi()
    wrong = "sha256:" + "0" * 64
    fake.manifests[wrong] = (MANIFEST, OCI_MANIFEST)
    with pytest.raises(RegistryError) as caught:
        client(fake).get_manifest(REF.with_digest(wrong))
    assert str(caught.value) == (
        f"{HOST}/team/app served a manifest whose digest is {digest_of(MANIFEST)}, not {wrong}"
    )


def test_a_blob_is_uploaded_by_post_then_put_with_its_digest_and_read_back() -> None:
    fake = DistributionApi()
    registry = client(fake)
    data = b'{"architecture": "amd64"}'
    digest = digest_of(data)
    assert registry.blob_exists(REF, digest) is False
    assert registry.put_blob(REF, data) == digest
    assert fake.methods()[1:] == [
        f"HEAD /v2/team/app/blobs/{digest}",
        "POST /v2/team/app/blobs/uploads/",
        f"PUT /v2/team/app/blobs/uploads/{fake.seen[-1].url.path.rsplit('/', 1)[1]}",
    ]
    assert fake.seen[-1].url.params["digest"] == digest
    assert registry.blob_exists(REF, digest) is True
    assert registry.get_blob(REF, digest) == data


def test_a_blob_the_repository_has_is_not_uploaded_again() -> None:
    fake = DistributionApi()
    data = b"layer"
    fake.blobs[digest_of(data)] = data
    client(fake).put_blob(REF, data)
    assert [r.method for r in fake.seen] == ["HEAD"]


def test_a_blob_that_does_not_match_its_digest_is_refused() -> None:
    fake = DistributionApi()
    digest = digest_of(b"what was asked for")
    fake.blobs[digest] = b"something else"
    with pytest.raises(RegistryError) as caught:
        client(fake).get_blob(REF, digest)
    assert str(caught.value) == f"blob {digest} from {HOST}/team/app does not match its digest"


# --- auth ----------------------------------------------------------------------------------------


def test_a_bearer_challenge_is_answered_with_a_token_scoped_to_the_repository() -> None:
    fake = DistributionApi(auth="bearer")
    registry = client(fake, credentials=ROBOT)
    fake.manifests["v1"] = (MANIFEST, OCI_MANIFEST)
    assert registry.get_manifest(REF).data == MANIFEST
    assert registry.manifest_digest(REF) == digest_of(MANIFEST)  # the token is kept
    token_requests = [r for r in fake.seen if r.url.path == "/token"]
    assert len(token_requests) == 1
    assert token_requests[0].headers["authorization"] == BASIC_AUTH
    assert token_requests[0].url.params["scope"] == "repository:team/app:pull"
    assert token_requests[0].url.params["service"] == HOST
    assert fake.seen[-1].headers["authorization"].startswith("Bearer ")


def test_a_push_asks_for_a_push_scoped_token() -> None:
    fake = DistributionApi(auth="bearer")
    registry = client(fake, credentials=ROBOT)
    registry.put_manifest(REF, MANIFEST, OCI_MANIFEST)
    (token_request,) = [r for r in fake.seen if r.url.path == "/token"]
    assert token_request.url.params["scope"] == "repository:team/app:pull,push"
    assert fake.manifests["v1"][0] == MANIFEST


def test_a_basic_challenge_is_answered_with_the_credentials() -> None:
    fake = DistributionApi(auth="basic")
    fake.manifests["v1"] = (MANIFEST, OCI_MANIFEST)
    registry = client(fake, credentials=ROBOT)
    assert registry.get_manifest(REF).data == MANIFEST
    assert registry.get_manifest(REF).data == MANIFEST
    # One challenge, then the credentials go with every request.
    assert [r.headers.get("authorization") for r in fake.seen] == [None, BASIC_AUTH, BASIC_AUTH]


def test_a_401_without_credentials_is_refused_with_the_registrys_words() -> None:
    fake = DistributionApi(auth="basic")
    with pytest.raises(RegistryError) as caught:
        client(fake).get_manifest(REF)
    assert caught.value.exit_code == 1
    assert str(caught.value) == (
        f"fetching the manifest of {REF} failed: HTTP 401 UNAUTHORIZED: authentication required"
    )
    assert len(fake.seen) == 1  # a 401 is not retried


def test_a_token_service_that_refuses_the_credentials() -> None:
    fake = DistributionApi(auth="bearer")
    with pytest.raises(TokenRefused) as caught:
        client(fake, credentials=Credentials("robot", "wrong")).get_manifest(REF)
    assert caught.value.status == 401
    assert str(caught.value) == (
        f"token service for {HOST} refused the request (401); check the registry credentials in "
        "your auth file"
    )


def test_a_404_names_what_does_not_exist() -> None:
    registry = client(DistributionApi())
    with pytest.raises(RegistryError) as caught:
        registry.get_manifest(REF)
    assert str(caught.value) == f"{REF} does not exist"
    with pytest.raises(RegistryError) as caught:
        registry.get_blob(REF, digest_of(b"x"))
    assert str(caught.value) == f"blob {digest_of(b'x')} does not exist in {HOST}/team/app"
    assert registry.manifest_digest(REF) is None


# --- retries -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [httpx.Response(503), httpx.Response(429), httpx.ReadTimeout("timed out")],
    ids=["503", "429", "read-timeout"],
)
def test_a_transient_failure_is_retried(fault: httpx.Response | Exception) -> None:
    fake = DistributionApi()
    fake.manifests["v1"] = (MANIFEST, OCI_MANIFEST)
    fake.faults = [fault]
    assert client(fake).get_manifest(REF).data == MANIFEST
    assert len(fake.seen) == 2


def test_a_post_that_timed_out_is_sent_again() -> None:
    """Starting an upload only opens a session; repeating it is harmless."""
    fake = DistributionApi()
    fake.faults = [httpx.Response(404), httpx.ReadTimeout("timed out")]  # HEAD, then POST
    client(fake).put_blob(REF, b"data")
    assert [r.method for r in fake.seen] == ["HEAD", "POST", "POST", "PUT"]
    assert fake.blobs == {digest_of(b"data"): b"data"}


def test_retries_give_up_with_the_last_answer() -> None:
    fake = DistributionApi()
    fake.faults = [httpx.Response(503)] * 5
    with pytest.raises(RegistryError) as caught:
        client(fake, attempts=3).get_manifest(REF)
    assert str(caught.value) == (
        f"{HOST}/team/app: GET https://{HOST}/v2/team/app/manifests/v1 answered HTTP 503 "
        "(gave up after retries)"
    )
    assert len(fake.seen) == 3


def test_an_expired_deadline_stops_retries() -> None:
    fake = DistributionApi()
    fake.faults = [httpx.Response(503)] * 5
    registry = client(fake, attempts=5)
    with registry.bounded(Deadline(0.0)), pytest.raises(RegistryError, match="gave up"):
        registry.get_manifest(REF)
    assert len(fake.seen) == 1


# --- refusals ------------------------------------------------------------------------------------


def test_a_redirect_to_an_internal_address_is_not_followed() -> None:
    fake = DistributionApi()
    digest = digest_of(b"x")
    fake.faults = [
        httpx.Response(307, headers={"Location": "http://metadata.example/latest/meta-data/"})
    ]
    with pytest.raises(RegistryError) as caught:
        client(fake).get_blob(REF, digest)
    assert str(caught.value) == (
        f"{HOST} sent us to metadata.example (169.254.169.254), a loopback, private or "
        "link-local address of another host; refusing to follow"
    )
    assert len(fake.seen) == 1


def test_a_redirect_to_public_storage_is_followed() -> None:
    data = b"config"
    digest = digest_of(data)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.example":
            return httpx.Response(200, content=data)
        return httpx.Response(307, headers={"Location": "https://storage.example/blob?sig=1"})

    assert client(answer).get_blob(REF, digest) == data


def test_an_upload_location_on_an_internal_address_is_refused() -> None:
    fake = DistributionApi()
    fake.faults = [
        httpx.Response(404),  # HEAD: not there yet
        httpx.Response(202, headers={"Location": "http://metadata.example/upload"}),
    ]
    with pytest.raises(RegistryError, match="refusing to follow"):
        client(fake).put_blob(REF, b"data")
    assert [r.method for r in fake.seen] == ["HEAD", "POST"]


def test_a_blob_over_its_limit_is_refused() -> None:
    data = b"x" * 2048
    fake = DistributionApi()
    fake.blobs[digest_of(data)] = data
    with pytest.raises(RegistryError) as caught:
        client(fake).get_blob(REF, digest_of(data), limit=1024)
    assert str(caught.value) == f"{HOST} sent 2048 bytes, more than the 1024 allowed"


def test_a_token_answer_over_its_limit_is_refused() -> None:
    fake = DistributionApi(auth="bearer")
    huge = httpx.Response(200, content=b" " * (1024 * 1024 + 1))
    fake.faults = [fake.challenge(httpx.Request("GET", f"https://{HOST}/v2/")), huge]
    with pytest.raises(RegistryError) as caught:
        client(fake, credentials=ROBOT).get_manifest(REF)
    assert str(caught.value) == f"{HOST} sent 1048577 bytes, more than the 1048576 allowed"


def test_nothing_is_sent_once_image_builder_is_stopping() -> None:
    fake = DistributionApi()
    with pytest.raises(RegistryError) as caught:
        client(fake, stopping=lambda: True).get_manifest(REF)
    assert str(caught.value) == (
        f"GET https://{HOST}/v2/team/app/manifests/v1 not sent: image-builder is stopping"
    )
    assert fake.seen == []


def test_a_retry_is_not_sent_once_image_builder_is_stopping() -> None:
    fake = DistributionApi()
    fake.faults = [httpx.Response(503)]
    with pytest.raises(RegistryError, match="not sent: image-builder is stopping"):
        client(fake, stopping=lambda: bool(fake.seen)).get_manifest(REF)
    assert len(fake.seen) == 1
