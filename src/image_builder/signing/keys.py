"""Signing keys: plain and encrypted PEM, and cosign's encrypted private-key format
(PKCS#8 DER sealed with NaCl secretbox under an scrypt-derived key, as JSON inside PEM)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from image_builder.atomic import write_atomic
from image_builder.errors import InputError

COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
WRITE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
# cosign writes N=32768 (older) or 65536 (newer) and reads 32768, 65536 and 131072; writing 32768
# keeps the keys readable by every cosign and sigstore client.
SCRYPT_N_WRITE = 32768
SCRYPT_N_READ = (32768, 65536, 131072)
_SCRYPT_R, _SCRYPT_P, _KEY_LEN = 8, 1, 32


def load_private_key(
    path: Path, *, password_env: str | None, env: Mapping[str, str]
) -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 private key from ``path``. The password, when the key needs one, is read
    from the variable ``password_env`` and never shown."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read private key {path}: {exc.strerror}") from None
    password = _password(password_env, env)
    text = data.decode("ascii", errors="replace")
    if any(f"-----BEGIN {kind}-----" in text for kind in COSIGN_PEM_TYPES):
        if password is None:
            raise InputError(
                f"private key {path} is encrypted; set password-env in the signer's config to the "
                "variable that holds its password"
            )
        der = decrypt_cosign_key(text, password, source=str(path))
        key = serialization.load_der_private_key(der, password=None)
    else:
        try:
            key = serialization.load_pem_private_key(data, password=password)
        except TypeError:
            raise InputError(
                f"private key {path} is encrypted; set password-env to the variable holding its password"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise InputError(
                f"private key {path} is not a PEM or cosign private key, or its password is wrong"
            ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InputError(
            f"private key {path} is not an ECDSA P-256 key; cosign signatures need one"
        )
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read public key {path}: {exc.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InputError(f"public key {path} is not an ECDSA key")
    return key


def decrypt_cosign_key(pem_text: str, password: bytes, *, source: str) -> bytes:
    from nacl.exceptions import CryptoError
    from nacl.secret import SecretBox

    body = _pem_body(pem_text, source)
    try:
        blob = json.loads(body)
        kdf, cipher = blob["kdf"], blob["cipher"]
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(blob["ciphertext"])
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{source} is not a valid cosign encrypted private key") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise InputError(
            f"{source} uses an unsupported kdf or cipher; expected scrypt and nacl/secretbox"
        )
    if (
        n not in SCRYPT_N_READ
        or (r, p) != (_SCRYPT_R, _SCRYPT_P)
        or len(nonce) != SecretBox.NONCE_SIZE
    ):
        raise InputError(f"{source} has unsupported scrypt or nonce parameters")
    key = hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=_KEY_LEN, maxmem=256 * 1024 * 1024
    )
    try:
        return bytes(SecretBox(key).decrypt(ciphertext, nonce))
    except CryptoError:
        raise InputError(f"cannot decrypt {source}: wrong password") from None


def encrypt_cosign_key(der: bytes, password: bytes) -> str:
    from nacl.secret import SecretBox

    salt = secrets.token_bytes(32)
    nonce = secrets.token_bytes(SecretBox.NONCE_SIZE)
    key = hashlib.scrypt(
        password,
        salt=salt,
        n=SCRYPT_N_WRITE,
        r=_SCRYPT_R,
        p=_SCRYPT_P,
        dklen=_KEY_LEN,
        maxmem=256 * 1024 * 1024,
    )
    sealed = (
        SecretBox(key).encrypt(der, nonce).ciphertext
    )  # the tag and the data, without the nonce
    body = json.dumps(
        {
            "kdf": {
                "name": "scrypt",
                "params": {"N": SCRYPT_N_WRITE, "r": _SCRYPT_R, "p": _SCRYPT_P},
                "salt": base64.b64encode(salt).decode(),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
            "ciphertext": base64.b64encode(sealed).decode(),
        }
    ).encode()
    return _pem(WRITE_PEM_TYPE, body)


def generate_key_pair(prefix: Path, password: bytes) -> tuple[Path, Path]:
    """Write ``<prefix>.key`` (cosign's encrypted format, mode 0600) and ``<prefix>.pub``."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise InputError(
                f"{path} already exists; remove it or choose another --output-key-prefix"
            )
    write_atomic(key_path, encrypt_cosign_key(der, password))
    os.chmod(key_path, 0o600)
    write_atomic(pub_path, public_pem.decode())
    return key_path, pub_path


def _password(variable: str | None, env: Mapping[str, str]) -> bytes | None:
    if variable is None:
        return None
    if variable not in env:
        raise InputError(f"password-env names {variable}, but {variable} is not set")
    return env[variable].encode()


def _pem_body(text: str, source: str) -> bytes:
    lines = text.strip().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("-----BEGIN "))
        end = next(i for i, line in enumerate(lines) if line.startswith("-----END ") and i > start)
        return base64.b64decode("".join(lines[start + 1 : end]))
    except (StopIteration, ValueError):
        raise InputError(f"{source} is not a PEM file") from None


def _pem(kind: str, body: bytes) -> str:
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n"
