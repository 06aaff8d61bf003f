"""DSSE envelopes (Dead Simple Signing Envelope, v1): a payload, its type, and signatures over
the pre-authentication encoding (PAE) of both, here ECDSA P-256 over SHA-256 as cosign makes
them. The envelope is the layer cosign stores an attestation in."""

from __future__ import annotations

import base64
import binascii
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

IN_TOTO = "application/vnd.in-toto+json"
MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"


class EnvelopeError(ValueError):
    """An envelope that is malformed, or that no signature of the given key verifies."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 <len(type)> <type> <len(payload)> <payload>``, lengths as ASCII decimals of bytes."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def seal(
    payload: bytes, key: ec.EllipticCurvePrivateKey | None, payload_type: str = IN_TOTO
) -> bytes:
    """The envelope's JSON: signed by ``key``, or with no signature when ``key`` is None."""
    signatures = []
    if key is not None:
        signature = key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
        signatures.append({"keyid": "", "sig": base64.b64encode(signature).decode()})
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode(),
        "signatures": signatures,
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def open_envelope(
    data: bytes, key: ec.EllipticCurvePublicKey, payload_type: str = IN_TOTO
) -> bytes:
    """The payload of an envelope of ``payload_type`` that a signature of ``key`` verifies."""
    try:
        envelope = json.loads(data)
        kind = envelope["payloadType"]
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise EnvelopeError("malformed DSSE envelope") from None
    if kind != payload_type:
        raise EnvelopeError(f"payload type {str(kind)[:80]!r}, expected {payload_type}")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("unsigned envelope")
    message = pae(payload_type, payload)
    for entry in signatures:
        try:
            signature = base64.b64decode(entry["sig"], validate=True)
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, KeyError, TypeError, binascii.Error):
            continue
        return payload
    raise EnvelopeError(
        "bad signature: no signature verifies with the key (another key signed it, or the "
        "statement was changed)"
    )
