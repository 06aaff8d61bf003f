from __future__ import annotations

import httpx
import pytest

from image_builder.errors import InputError
from image_builder.registry import (
    RegistryError,
    check_target,
    parse_reference,
    refuse_private_redirects,
)


def redirect(source: str, location: str) -> httpx.Response:
    return httpx.Response(307, headers={"Location": location}, request=httpx.Request("GET", source))


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata, link-local
        "http://10.0.0.5/blob",
        "http://127.0.0.1:8080/admin",
        "http://[::1]/x",
        "http://192.168.1.1/",
    ],
)
def test_redirects_to_another_hosts_private_address_are_refused(location: str) -> None:
    with pytest.raises(
        RegistryError, match="a private or link-local address of another host"
    ) as caught:
        refuse_private_redirects(redirect("https://registry.example/v2/a/blobs/sha256:1", location))
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    ("source", "location"),
    [
        ("https://registry.example/v2/x", "https://storage.example/blob?sig=1"),  # public storage
        ("https://registry.example/v2/x", "/v2/x/blobs/uploads/123"),  # same host
        ("http://127.0.0.1:5000/v2/x", "http://127.0.0.1:5000/v2/y"),  # same loopback host
    ],
)
def test_ordinary_redirects_pass(source: str, location: str) -> None:
    refuse_private_redirects(redirect(source, location))


def test_token_realm_on_loopback_for_a_loopback_registry() -> None:
    check_target("127.0.0.1", "127.0.0.2", allow_private=True)
    with pytest.raises(RegistryError):
        check_target("registry.example", "127.0.0.2")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ghcr.io/org/app:v1", ("ghcr.io", "org/app", "v1", None)),
        ("localhost:5000/app", ("localhost:5000", "app", "latest", None)),
        ("busybox", ("docker.io", "library/busybox", "latest", None)),
        ("r.example/a/b@sha256:" + "a" * 64, ("r.example", "a/b", None, "sha256:" + "a" * 64)),
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
    ],
)
def test_bad_references(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_reference(text)
    assert caught.value.exit_code == 2
