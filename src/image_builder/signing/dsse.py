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
# An envelope is read from a registry: at most this many signatures are tried, each an ECDSA
# verification (a planted envelope could otherwise carry tens of thousands).
MAX_SIGNATURES = 8
MAX_ENVELOPE_BYTES = 512 * 1024


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
        payload = _b64(envelope["payload"])
        signatures = envelope["signatures"]
    except (ValueError, KeyError, TypeError, RecursionError, binascii.Error):
        raise EnvelopeError("malformed DSSE envelope") from None
    if kind != payload_type:
        raise EnvelopeError(f"payload type {str(kind)[:80]!r}, expected {payload_type}")
    if not isinstance(signatures, list) or not signatures:
        raise EnvelopeError("unsigned envelope")
    if len(signatures) > MAX_SIGNATURES:
        raise EnvelopeError(
            f"an envelope with {len(signatures)} signatures, more than {MAX_SIGNATURES}; "
            "refusing to try them"
        )
    message = pae(payload_type, payload)
    for entry in signatures:
        try:
            signature = _b64(entry["sig"])
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError, KeyError, TypeError, binascii.Error):
            continue
        return payload
    raise EnvelopeError(
        "bad signature: no signature verifies with the key (another key signed it, or the "
        "statement was changed)"
    )


def _b64(text: object) -> bytes:
    """Standard or URL-safe base64, as DSSE lets signers write either."""
    if not isinstance(text, str):
        raise TypeError
    if "-" in text or "_" in text:
        return base64.urlsafe_b64decode(text.encode("ascii"))
    return base64.b64decode(text, validate=True)
