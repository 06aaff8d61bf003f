from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder.signing.dsse import IN_TOTO, EnvelopeError, open_envelope, pae, seal
from tests.support.slsa_spec import check_envelope

PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1"}'
BAD_SIGNATURE = (
    "^bad signature: no signature verifies with the key "
    r"\(another key signed it, or the statement was changed\)$"
)


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def edited(envelope: bytes, **fields: Any) -> bytes:
    data = json.loads(envelope)
    data.update(fields)
    return json.dumps(data).encode()


def test_pae_is_the_example_of_the_dsse_specification() -> None:
    # protocol.md, "Test vectors": lengths are ASCII decimals of the byte lengths.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t/\u00e9", "\u00e9".encode()) == "DSSEv1 4 t/\u00e9 2 \u00e9".encode()


def test_a_sealed_envelope_opens_with_the_public_key(key: ec.EllipticCurvePrivateKey) -> None:
    assert open_envelope(seal(PAYLOAD, key), key.public_key()) == PAYLOAD


def test_a_sealed_envelope_meets_the_dsse_specification(key: ec.EllipticCurvePrivateKey) -> None:
    envelope = json.loads(seal(PAYLOAD, key))
    assert check_envelope(envelope) == []
    assert envelope["payloadType"] == IN_TOTO
    assert base64.b64decode(envelope["payload"]) == PAYLOAD


def test_the_signature_is_ecdsa_over_the_pae(key: ec.EllipticCurvePrivateKey) -> None:
    envelope = json.loads(seal(PAYLOAD, key))
    (signature,) = envelope["signatures"]
    sig = base64.b64decode(signature["sig"])
    # Verified by cryptography itself, not open_envelope: raises InvalidSignature otherwise.
    key.public_key().verify(sig, pae(IN_TOTO, PAYLOAD), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):  # over the PAE, not over the bare payload
        key.public_key().verify(sig, PAYLOAD, ec.ECDSA(hashes.SHA256()))


def test_an_unsigned_envelope_has_no_signatures_and_is_refused(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    envelope = seal(PAYLOAD, None)
    assert json.loads(envelope)["signatures"] == []
    assert check_envelope(json.loads(envelope), signed=False) == []
    assert check_envelope(json.loads(envelope)) == [
        "$.signatures: must hold at least one signature"
    ]
    with pytest.raises(EnvelopeError, match=r"^unsigned envelope$"):
        open_envelope(envelope, key.public_key())


def test_another_key_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(EnvelopeError, match=BAD_SIGNATURE):
        open_envelope(seal(PAYLOAD, other), key.public_key())


def test_a_changed_payload_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    changed = edited(seal(PAYLOAD, key), payload=base64.b64encode(PAYLOAD + b" ").decode())
    with pytest.raises(EnvelopeError, match=BAD_SIGNATURE):
        open_envelope(changed, key.public_key())


def test_a_changed_payload_type_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    changed = edited(seal(PAYLOAD, key), payloadType="text/plain")
    with pytest.raises(EnvelopeError) as caught:
        open_envelope(changed, key.public_key())
    assert str(caught.value) == f"payload type 'text/plain', expected {IN_TOTO}"


def test_a_payload_type_changed_on_both_sides_still_fails_the_signature(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    # The type is signed (it is in the PAE): expecting the new type does not help.
    changed = edited(seal(PAYLOAD, key), payloadType="text/plain")
    with pytest.raises(EnvelopeError, match=BAD_SIGNATURE):
        open_envelope(changed, key.public_key(), payload_type="text/plain")


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"payloadType": "application/vnd.in-toto+json", "signatures": []}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "@@@", "signatures": []}',
        b'{"payloadType": "application/vnd.in-toto+json", "payload": "YQ", "signatures": []}',
    ],
    ids=["not-json", "not-an-object", "no-payload", "bad-base64", "unpadded-base64"],
)
def test_a_malformed_envelope_is_refused(key: ec.EllipticCurvePrivateKey, data: bytes) -> None:
    with pytest.raises(EnvelopeError, match=r"^malformed DSSE envelope$"):
        open_envelope(data, key.public_key())


def test_a_signature_that_is_not_base64_is_skipped(key: ec.EllipticCurvePrivateKey) -> None:
    sealed = json.loads(seal(PAYLOAD, key))
    good = sealed["signatures"][0]
    bad = edited(seal(PAYLOAD, key), signatures=[{"sig": "@@@"}])
    with pytest.raises(EnvelopeError, match=BAD_SIGNATURE):
        open_envelope(bad, key.public_key())
    # ... and the next signature still counts.
    both = edited(seal(PAYLOAD, key), signatures=[{"sig": "@@@"}, good])
    assert open_envelope(both, key.public_key()) == PAYLOAD


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        ({"payload": "YQ==", "signatures": [{"sig": "YQ=="}]}, "$.payloadType: must be"),
        ({"payloadType": "t", "payload": "@@", "signatures": [{"sig": "YQ=="}]}, "$.payload:"),
        ({"payloadType": "t", "payload": "YQ==", "signatures": [{}]}, "$.signatures[0].sig:"),
        (
            {"payloadType": "t", "payload": "YQ==", "signatures": [{"keyid": 1, "sig": "YQ=="}]},
            "$.signatures[0].keyid: must be a string",
        ),
    ],
)
def test_the_envelope_checker_catches_broken_envelopes(
    envelope: dict[str, Any], problem: str
) -> None:
    (found,) = check_envelope(envelope)
    assert found.startswith(problem)
