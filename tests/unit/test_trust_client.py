"""JwksCache and TokenVerifier against an issuer behind httpx.MockTransport, with keys made here:
fetching, caching, refetch budgets, failing closed, stale keys, malformed documents, and every
check a token must pass."""

from __future__ import annotations

import json
import logging
import re
import time
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from image_builder.config import TrustedIssuer
from image_builder.errors import TrustError
from image_builder.http import RetryPolicy
from image_builder.trust import JwksCache, TokenVerifier
from tests.support.oidc import TokenMinter

ISSUER = "https://issuer.example"
WORKFLOW = "org/builder/.github/workflows/image-builder.yml@refs/heads/main"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def policy(**overrides: Any) -> TrustedIssuer:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": "image-builder",
        "job-workflow-refs": [WORKFLOW],
        "repository-owners": [{"name": "org", "id": 123456}],
        "events": ["push", "pull_request_target"],
        "max-token-age": "10m",
    }
    values.update(overrides)
    return TrustedIssuer.model_validate(values)


def jwk(key: Any, kid: str) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(public))
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public))
    return {**data, "kid": kid, "use": "sig"}


class Issuer:
    """Discovery and JWKS over a mock transport. ``faults`` answer the next requests, one each;
    ``outage`` answers every request while it is set."""

    def __init__(self) -> None:
        self.discovery: object = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}
        self.jwks: object = {"keys": [jwk(RSA_KEY, "rsa-1"), jwk(EC_KEY, "ec-1")]}
        self.faults: list[httpx.Response | Exception] = []
        self.outage: httpx.Response | Exception | None = None
        self.requests: list[str] = []
        self.timeouts: list[float] = []  # each request's read timeout
        self.now = 1000.0
        self.waits: list[float] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        self.timeouts.append(request.extensions["timeout"]["read"])
        fault = self.faults.pop(0) if self.faults else self.outage
        if isinstance(fault, httpx.RequestError):
            fault.request = request
            raise fault
        if isinstance(fault, httpx.Response):
            return fault
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.discovery)
        if request.url.path == "/jwks":
            return httpx.Response(200, json=self.jwks)
        return httpx.Response(404)

    def cache(self, **kwargs: Any) -> JwksCache:
        return JwksCache(
            http=httpx.Client(transport=httpx.MockTransport(self.answer)),
            clock=lambda: self.now,
            sleep=self.waits.append,
            retry=RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, budget=5.0),
            **kwargs,
        )

    def fetches(self) -> int:
        return self.requests.count("/jwks")


# --- the key cache -------------------------------------------------------------------------------


def test_the_first_use_finds_the_keys_through_discovery() -> None:
    issuer = Issuer()
    key = issuer.cache().key(policy(), "rsa-1")
    assert key.key_type == "RSA"
    assert issuer.requests == ["/.well-known/openid-configuration", "/jwks"]


def test_a_configured_jwks_uri_skips_discovery() -> None:
    issuer = Issuer()
    issuer.cache().key(policy(**{"jwks-uri": f"{ISSUER}/jwks"}), "ec-1")
    assert issuer.requests == ["/jwks"]


def test_a_cached_key_set_is_used_until_its_ttl_ends() -> None:
    issuer = Issuer()
    cache = issuer.cache(ttl=600.0)
    cache.key(policy(), "rsa-1")
    issuer.now += 599
    assert cache.key(policy(), "ec-1").key_type == "EC"
    assert issuer.fetches() == 1
    issuer.now += 2
    cache.key(policy(), "ec-1")
    assert issuer.fetches() == 2


def test_an_unknown_kid_refetches_at_most_once_a_minute() -> None:
    issuer = Issuer()
    cache = issuer.cache(min_refresh=60.0)
    cache.key(policy(), "rsa-1")
    issuer.now += 1
    for n in range(5):
        with pytest.raises(TrustError) as caught:
            cache.key(policy(), f"unknown-{n}")
    assert str(caught.value) == (
        f"token rejected: kid 'unknown-4' is not in the key set of {ISSUER} (known: ec-1, rsa-1)"
    )
    assert issuer.fetches() == 2  # one refetch for the first unknown kid
    issuer.now += 60
    with pytest.raises(TrustError):
        cache.key(policy(), "unknown-5")
    assert issuer.fetches() == 3


def test_a_key_rotated_in_after_the_first_fetch_is_picked_up() -> None:
    issuer = Issuer()
    cache = issuer.cache()
    cache.key(policy(), "rsa-1")
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    issuer.jwks = {"keys": [jwk(rotated, "rsa-2")]}
    issuer.now += 1
    assert cache.key(policy(), "rsa-2").key_id == "rsa-2"


def test_an_unknown_kid_right_after_a_fetch_does_not_fetch_again() -> None:
    issuer = Issuer()
    with pytest.raises(TrustError, match="kid 'rotated' is not in the key set"):
        issuer.cache().key(policy(), "rotated")
    assert issuer.fetches() == 1


def test_a_short_outage_is_retried() -> None:
    issuer = Issuer()
    issuer.faults = [httpx.Response(503), httpx.ConnectError("refused")]
    assert issuer.cache().key(policy(), "rsa-1").key_type == "RSA"
    assert issuer.requests == ["/.well-known/openid-configuration"] * 3 + ["/jwks"]
    assert len(issuer.waits) == 2
    # Every try gets what is left of one 5 s deadline, not 5 s each: the last ends by it too.
    assert all(0 < t < 5.0 for t in issuer.timeouts), issuer.timeouts
    assert issuer.timeouts == sorted(issuer.timeouts, reverse=True)


def test_an_issuer_that_is_down_fails_closed_after_three_attempts() -> None:
    issuer = Issuer()
    issuer.outage = httpx.Response(503)
    with pytest.raises(TrustError) as caught:
        issuer.cache().key(policy(), "rsa-1")
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        f"cannot fetch the signing keys of {ISSUER} ({ISSUER}/.well-known/openid-configuration "
        "answered 503), and none are cached; refusing the token (fail closed)"
    )
    assert len(issuer.requests) == 3
    assert len(issuer.waits) == 2


def test_an_unreachable_issuer_is_named_with_the_cause() -> None:
    issuer = Issuer()
    issuer.outage = httpx.ConnectError("[Errno 111] Connection refused")
    with pytest.raises(TrustError) as caught:
        issuer.cache().key(policy(), "rsa-1")
    assert str(caught.value) == (
        f"cannot fetch the signing keys of {ISSUER} ([Errno 111] Connection refused), and none "
        "are cached; refusing the token (fail closed)"
    )


def test_a_refusal_is_not_retried() -> None:
    issuer = Issuer()
    issuer.outage = httpx.Response(404)
    with pytest.raises(TrustError, match=r"openid-configuration answered 404\), and none"):
        issuer.cache().key(policy(), "rsa-1")
    assert len(issuer.requests) == 1


def test_the_last_good_key_set_serves_while_the_issuer_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    issuer = Issuer()
    cache = issuer.cache(ttl=600.0)
    cache.key(policy(), "rsa-1")
    issuer.now += 700
    issuer.outage = httpx.Response(500)
    with caplog.at_level(logging.WARNING, logger="image_builder.trust"):
        assert cache.key(policy(), "rsa-1").key_id == "rsa-1"
    assert caplog.messages == [
        f"fetching the keys of {ISSUER} failed ({ISSUER}/.well-known/openid-configuration "
        "answered 500); using the key set fetched 700 s ago"
    ]
    # A key the stale set does not hold is still refused: no refetch within the minute.
    with pytest.raises(TrustError, match="kid 'rsa-9' is not in the key set"):
        cache.key(policy(), "rsa-9")


@pytest.mark.parametrize(
    ("discovery", "jwks", "problem"),
    [
        ([], None, "the discovery document is not a JSON object"),
        ({"issuer": ISSUER}, None, "the discovery document has no jwks_uri"),
        ({"jwks_uri": f"{ISSUER}/jwks"}, None, "the discovery document has no issuer"),
        (
            {"issuer": "https://evil.example", "jwks_uri": f"{ISSUER}/jwks"},
            None,
            "discovery names issuer 'https://evil.example'",
        ),
        (
            {"issuer": ISSUER, "jwks_uri": 7},
            None,
            "the discovery document's jwks_uri is not a string",
        ),
        (None, {}, "the key set has no keys"),
        (None, {"keys": "rsa-1"}, "the key set's keys is not a list"),
        (None, "keys", "the key set is not a JSON object"),
    ],
)
def test_a_malformed_document_is_refused_in_one_line(
    discovery: object, jwks: object, problem: str
) -> None:
    issuer = Issuer()
    if discovery is not None:
        issuer.discovery = discovery
    if jwks is not None:
        issuer.jwks = jwks
    with pytest.raises(TrustError) as caught:
        issuer.cache().key(policy(), "rsa-1")
    assert str(caught.value) == (
        f"cannot fetch the signing keys of {ISSUER} ({problem}), and none are cached; refusing "
        "the token (fail closed)"
    )


def test_an_answer_that_is_not_json_is_refused() -> None:
    issuer = Issuer()
    issuer.outage = httpx.Response(200, text="<html>maintenance</html>")
    with pytest.raises(TrustError, match=r"\(the discovery document is not JSON\)"):
        issuer.cache().key(policy(), "rsa-1")


def test_keys_without_a_kid_or_of_unknown_types_are_skipped() -> None:
    issuer = Issuer()
    issuer.jwks = {
        "keys": [
            {**jwk(RSA_KEY, "x"), "kid": None},
            {"kty": "OKP", "kid": "okp-1"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            # Not keys at all: skipped one by one, never the whole set refused for them.
            "garbage",
            7,
            {"kid": "no-kty"},
            {**jwk(RSA_KEY, "x"), "kid": 1},
            jwk(RSA_KEY, "rsa-1"),
        ]
    }
    cache = issuer.cache()
    assert cache.key(policy(), "rsa-1").key_id == "rsa-1"
    with pytest.raises(TrustError, match=r"\(known: rsa-1\)"):
        cache.key(policy(), "okp-1")


# --- the verifier --------------------------------------------------------------------------------


MINTER = TokenMinter(ISSUER)


def claims(**overrides: Any) -> dict[str, Any]:
    return MINTER.claims(**overrides)


def token(
    *, key: Any = RSA_KEY, alg: str = "RS256", kid: str = "rsa-1", headers: Any = None, **claim: Any
) -> str:
    return MINTER.token(key=key, algorithm=alg, headers={"kid": kid, **(headers or {})}, **claim)


def verifier(**trust: Any) -> TokenVerifier:
    return TokenVerifier([policy(**trust)], Issuer().cache())


def refusal(text: str, **trust: Any) -> str:
    with pytest.raises(TrustError) as caught:
        verifier(**trust).verify(text)
    assert caught.value.exit_code == 2
    assert text not in str(caught.value)
    return str(caught.value)


def test_a_good_token_gives_its_claims() -> None:
    verified = verifier(**{"signing-refs": ["refs/heads/main"]}).verify(
        "Bearer " + token(jti="4f1c7a")
    )
    assert verified.issuer == ISSUER
    assert verified.repository == "org/app"
    assert verified.repository_owner_id == 123456
    assert verified.event_name == "push"
    assert verified.job_workflow_ref == WORKFLOW
    assert verified.sha == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert verified.jti == "4f1c7a"
    assert verified.signing_allowed is True
    assert verified.signing_reason == "ref refs/heads/main matches signing-refs"
    assert verified.image_namespaces == ("app", "app/**")


def test_an_ec_key_verifies_es256() -> None:
    assert verifier().verify(token(key=EC_KEY, alg="ES256", kid="ec-1")).repository == "org/app"


def test_a_signature_by_another_key_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refusal(token(key=other)) == (
        "token rejected: the signature does not verify with the issuer's key 'rsa-1'"
    )


def test_an_untrusted_issuer_is_refused() -> None:
    assert refusal(token(iss="https://evil.example")) == (
        "token rejected: issuer 'https://evil.example' is not trusted; trusted: "
        "'https://issuer.example'"
    )


@pytest.mark.parametrize("audience", ["other", ["image-builder", "other"]])
def test_the_audience_must_be_exactly_ours(audience: object) -> None:
    assert refusal(token(aud=audience)) == (
        f"token rejected: aud must be exactly 'image-builder', got {audience!r}"
    )


def test_an_audience_list_of_just_ours_passes() -> None:
    assert verifier().verify(token(aud=["image-builder"])).repository == "org/app"


def test_an_expired_token_is_refused_after_the_leeway() -> None:
    now = int(time.time())
    assert verifier().verify(token(exp=now - 30)).repository == "org/app"  # within 60 s
    assert refusal(token(iat=now - 200, nbf=now - 200, exp=now - 100)).startswith(
        "token rejected: it expired at "
    )


def test_a_token_not_valid_yet_is_refused() -> None:
    now = int(time.time())
    assert refusal(token(nbf=now + 600, exp=now + 900)) == (
        "token rejected: nbf or iat is in the future (leeway 60s)"
    )


def test_a_token_older_than_max_token_age_is_refused() -> None:
    now = int(time.time())
    message = refusal(token(iat=now - 3600, nbf=now - 3600))
    assert re.fullmatch(
        r"token rejected: it was issued 36(00|01)s ago, more than max-token-age 600s", message
    )


@pytest.mark.parametrize(
    ("alg", "key", "kid", "problem"),
    [
        (
            "HS256",
            b"k" * 32,
            "rsa-1",
            "token rejected: alg must be RS256 (or ES256 for EC keys), got 'HS256'",
        ),
        (
            "RS512",
            RSA_KEY,
            "rsa-1",
            "token rejected: alg must be RS256 (or ES256 for EC keys), got 'RS512'",
        ),
        (
            "ES256",
            EC_KEY,
            "rsa-1",
            "token rejected: alg ES256 does not fit key 'rsa-1' of type RSA",
        ),
        ("RS256", RSA_KEY, "ec-1", "token rejected: alg RS256 does not fit key 'ec-1' of type EC"),
    ],
)
def test_the_algorithm_must_fit_the_key(alg: str, key: Any, kid: str, problem: str) -> None:
    assert refusal(token(key=key, alg=alg, kid=kid)) == problem


def test_alg_none_is_refused() -> None:
    unsigned = jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"})
    assert refusal(unsigned) == (
        "token rejected: alg must be RS256 (or ES256 for EC keys), got 'none'"
    )


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk"])
def test_key_locations_in_the_header_are_refused(name: str) -> None:
    assert refusal(token(headers={name: "https://evil.example/keys"})) == (
        f"token rejected: its header carries {name!r}; keys come only from the configured "
        "issuer's key set"
    )


@pytest.mark.parametrize(
    ("overrides", "trust", "problem"),
    [
        (
            {"job_workflow_ref": "org/app/.github/workflows/evil.yml@refs/heads/main"},
            {},
            f"token rejected: job_workflow_ref must be one of ['{WORKFLOW}'], got "
            "'org/app/.github/workflows/evil.yml@refs/heads/main'",
        ),
        (
            {"repository_owner_id": "999"},
            {},
            "token rejected: repository owner must be one of ['org (123456)'], got org (999)",
        ),
        (
            {"event_name": "pull_request"},
            {},
            "token rejected: event_name must be one of ['push', 'pull_request_target'], got "
            "'pull_request'",
        ),
        ({"repository": None}, {}, "token rejected: required claim 'repository' is missing"),
        (
            {"job_workflow_ref": None},
            {},
            "token rejected: required claim 'job_workflow_ref' is missing",
        ),
        (
            {"ref": "refs/heads/../main"},
            {},
            "token rejected: ref 'refs/heads/../main' is not a valid git ref",
        ),
        (
            {"repository_owner_id": True},
            {},
            "token rejected: claim 'repository_owner_id' must be a string or an integer",
        ),
        ({"exp": None}, {}, "token rejected: required claim 'exp' is missing"),
    ],
)
def test_the_policy_checks_the_claims(
    overrides: dict[str, Any], trust: dict[str, Any], problem: str
) -> None:
    assert refusal(token(**overrides), **trust) == problem


def test_job_workflow_refs_any_lets_a_token_without_one_pass() -> None:
    verified = verifier(**{"job-workflow-refs": "any"}).verify(token(job_workflow_ref=None))
    assert verified.job_workflow_ref is None


def test_a_ref_outside_signing_refs_builds_but_is_not_signed() -> None:
    verified = verifier(**{"signing-refs": ["refs/heads/main"]}).verify(
        token(ref="refs/heads/feature")
    )
    assert verified.signing_allowed is False
    assert verified.signing_reason == (
        "ref 'refs/heads/feature' does not match signing-refs ['refs/heads/main']"
    )


def test_max_token_age_comes_from_the_policy() -> None:
    assert policy(**{"max-token-age": "2h"}).max_token_age == timedelta(hours=2)
    now = int(time.time())
    verified = verifier(**{"max-token-age": "2h"}).verify(token(iat=now - 3600, nbf=now - 3600))
    assert verified.repository == "org/app"
