"""The ``notary`` signer: the Signify service, over mutual TLS.

One POST per build carries every repository, tag and platform manifest. The client certificate
and key come from the secret file (``{"certData": <base64 PEM>, "privateKeyData": <base64 PEM>}``)
and are never printed. The certificate lives 7 days; ``rotate`` exchanges a CSR for a new one."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import ssl
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict, Field

from image_builder.atomic import write_atomic
from image_builder.config import NotaryConfig
from image_builder.duration import format_go_duration
from image_builder.errors import InputError, RuntimeFailure
from image_builder.http import (
    Deadline,
    RequestUncertain,
    RetriesExhausted,
    RetryableError,
    RetryPolicy,
    describe,
    send_with_retries,
    tls_context,
)
from image_builder.signing import SignTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignifySecret:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)

    def certificate(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate(self.cert_pem)
        except ValueError:
            raise InputError("the Signify secret's certData is not a PEM certificate") from None


def read_secret(path: Path) -> SignifySecret:
    try:
        data = json.loads(path.read_text())
        cert = base64.b64decode(data["certData"], validate=True)
        key = base64.b64decode(data["privateKeyData"], validate=True)
    except OSError as exc:
        raise InputError(f"cannot read the Signify secret {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError):
        raise InputError(
            f"the Signify secret {path} must be JSON with base64 PEM in certData and privateKeyData"
        ) from None
    return SignifySecret(cert, key)


def write_secret(path: Path, secret: SignifySecret) -> Path | None:
    """Write ``secret`` atomically, keeping the previous file as ``<path>.previous``."""
    backup = None
    if path.exists():
        backup = path.with_name(path.name + ".previous")
        shutil.copy2(path, backup)
        os.chmod(backup, 0o600)
    text = json.dumps(
        {
            "certData": base64.b64encode(secret.cert_pem).decode(),
            "privateKeyData": base64.b64encode(secret.key_pem).decode(),
        }
    )
    write_atomic(path, text)
    os.chmod(path, 0o600)
    return backup


@contextmanager
def mtls(secret: SignifySecret, ca_file: str | None) -> Iterator[ssl.SSLContext]:
    """An SSL context holding the client pair. The PEMs touch disk only inside a private folder
    for the moment ``load_cert_chain`` needs them."""
    folder = Path(tempfile.mkdtemp(prefix="image-builder-mtls-"))
    try:
        cert, key = folder / "cert.pem", folder / "key.pem"
        cert.write_bytes(secret.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(secret.key_pem)
        try:
            context = tls_context(
                ca_file=Path(ca_file) if ca_file else None, cert_file=cert, key_file=key
            )
        except InputError:
            raise InputError(
                "the Signify client certificate and key cannot be loaded; check the secret file"
            ) from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    yield context


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, defer_build=True)


class SignifyTarget(_Wire):
    name: str
    byte_size: int = Field(alias="byteSize")
    digest: str  # hex, without the algorithm


class TrustedCollection(_Wire):
    gun: str  # the repository
    targets: list[SignifyTarget]


class SignifyRequest(_Wire):
    """The body of ``POST /sign``."""

    trusted_collections: list[TrustedCollection] = Field(alias="trustedCollections")


class RotatedCertificate(_Wire):
    """The rotation endpoint's answer; other members are ignored."""

    cert_data: str = Field(alias="certData")


def signify_request(targets: Sequence[SignTarget]) -> SignifyRequest:
    """One trusted collection per repository: a target per tag (the pushed digest) and, for an
    index, a target per platform manifest named after its digest (``sha256-<hex>``), since those
    have no tags of their own."""
    collections = []
    for target in targets:
        names = target.tags or (target.digest.replace(":", "-"),)  # a digest-only reference
        entries = [
            SignifyTarget(
                name=tag, byte_size=target.size, digest=target.digest.removeprefix("sha256:")
            )
            for tag in names
        ]
        entries += [
            SignifyTarget(
                name=p.digest.replace(":", "-"),
                byte_size=p.size,
                digest=p.digest.removeprefix("sha256:"),
            )
            for p in target.platforms
        ]
        collections.append(TrustedCollection(gun=target.repository, targets=entries))
    return SignifyRequest(trusted_collections=collections)


class NotarySigner:
    def __init__(
        self,
        *,
        name: str,
        config: NotaryConfig,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._on_retry = on_retry
        self.requests = 0

    def sign(self, targets: Sequence[SignTarget]) -> None:
        body = signify_request(targets).model_dump_json(by_alias=True).encode()
        secret = read_secret(Path(self._config.secret.path))
        check_not_expired(secret, datetime.now(UTC))
        deadline = self._config.timeout.total_seconds()
        policy = RetryPolicy(
            attempts=1000,
            base_delay=0.5,
            max_delay=self._config.retry_timeout.total_seconds(),
            budget=deadline,
        )
        with (
            mtls(secret, self._config.ca_file) as context,
            httpx.Client(
                verify=context, timeout=httpx.Timeout(min(deadline, 60.0)), trust_env=False
            ) as client,
        ):
            ends = Deadline(deadline)

            def exchange() -> httpx.Response:
                self.requests += 1
                # Each try gets at most what is left of `timeout`: the last one ends by it too.
                return client.post(
                    self._config.endpoint,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=max(min(ends.remaining(), 60.0), 0.001),
                )

            def report(number: int, error: RetryableError, wait: float) -> None:
                if self._on_retry is not None:
                    self._on_retry(
                        f"signer {self.name}: attempt {number} failed ({error.reason}); retrying "
                        f"in {wait:.1f}s"
                    )

            try:
                # Signing the same digests twice is harmless, so the POST counts as idempotent
                # and is retried on the same answers as every other client's requests.
                response = send_with_retries(
                    exchange,
                    what=f"POST {self._config.endpoint}",
                    policy=policy,
                    deadline=ends,
                    on_retry=report,
                )
            except RetriesExhausted as exc:
                raise RuntimeFailure(
                    f"signer {self.name}: the Signify service did not accept the request within "
                    f"{format_go_duration(self._config.timeout)} ({exc.attempts} attempts, last: "
                    f"{exc.last.reason})"
                ) from None
        if response.status_code != 202:
            raise RuntimeFailure(
                f"signer {self.name}: the Signify service refused the request with HTTP "
                f"{response.status_code}: {response.text[:200].strip()}"
            )


# --- certificate lifecycle ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CertStatus:
    subject: str
    not_after: datetime
    remaining: timedelta

    @property
    def expired(self) -> bool:
        return self.remaining <= timedelta(0)


def cert_status(secret: SignifySecret, now: datetime) -> CertStatus:
    cert = secret.certificate()
    not_after = cert.not_valid_after_utc
    return CertStatus(
        subject=cert.subject.rfc4514_string(), not_after=not_after, remaining=not_after - now
    )


def check_not_expired(secret: SignifySecret, now: datetime) -> None:
    status = cert_status(secret, now)
    if status.expired:
        raise RuntimeFailure(
            f"the Signify client certificate ({status.subject}) expired on "
            f"{status.not_after:%Y-%m-%d %H:%M} UTC; a new one must be issued out of band, since "
            "rotation needs a valid certificate"
        )


def rotate(config: NotaryConfig, now: datetime) -> tuple[CertStatus, Path | None]:
    """Make a new key and CSR, exchange the CSR with the current pair, check the answer, and
    write the secret file atomically (the previous one kept as ``.previous``)."""
    if not config.rotate_endpoint:
        raise InputError("the signer's config has no rotate-endpoint; add the Signify rotation URL")
    path = Path(config.secret.path)
    current = read_secret(path)
    check_not_expired(current, now)
    new_key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(current.certificate().subject)
        .sign(new_key, hashes.SHA256())
    )
    cert_pem = exchange_csr(config, current, csr.public_bytes(serialization.Encoding.PEM))
    try:
        new_cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise RuntimeFailure(
            "the rotation endpoint returned something that is not a PEM certificate"
        ) from None
    if new_cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != new_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise RuntimeFailure(
            "the rotation endpoint returned a certificate for another key; the secret is unchanged"
        )
    key_pem = new_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    secret = SignifySecret(cert_pem, key_pem)
    backup = write_secret(path, secret)
    return cert_status(secret, now), backup


def exchange_csr(config: NotaryConfig, current: SignifySecret, csr_pem: bytes) -> bytes:
    """The one request that talks to the rotation endpoint: ``{"csr": <base64 PEM>}`` in,
    ``{"certData": <base64 PEM>}`` out, authenticated with the current pair."""
    assert config.rotate_endpoint is not None  # noqa: S101 - checked by rotate()
    with (
        mtls(current, config.ca_file) as context,
        httpx.Client(verify=context, timeout=httpx.Timeout(60.0), trust_env=False) as client,
    ):
        endpoint = config.rotate_endpoint
        body = {"csr": base64.b64encode(csr_pem).decode()}
        try:
            # Not repeated once it may have arrived: the service may have issued a certificate.
            response = send_with_retries(
                lambda: client.post(endpoint, json=body),
                what=f"POST {endpoint}",
                policy=RetryPolicy(attempts=3, budget=30.0),
                idempotent=False,
            )
        except RetriesExhausted as exc:
            raise RuntimeFailure(
                f"the rotation endpoint cannot be reached: {exc.last.reason}"
            ) from None
        except RequestUncertain as exc:
            raise RuntimeFailure(
                f"the rotation endpoint did not answer: {describe(exc.cause)}; the secret is "
                "unchanged"
            ) from None
    if response.status_code != 200:
        raise RuntimeFailure(
            f"the rotation endpoint answered HTTP {response.status_code}: {response.text[:200].strip()}"
        )
    try:
        answer = RotatedCertificate.model_validate_json(response.content)
        return base64.b64decode(answer.cert_data, validate=True)
    except ValueError:  # pydantic's ValidationError and binascii.Error are ValueErrors
        raise RuntimeFailure("the rotation endpoint's answer has no base64 certData") from None
