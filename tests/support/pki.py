"""A throwaway PKI for tests: a CA, server certificates for loopback, client certificates."""

from __future__ import annotations

import base64
import ipaddress
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class CA:
    name: str = "image-builder test CA"
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    cert: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(self.name))
            .issuer_name(_name(self.name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        subject: x509.Name,
        *,
        lifetime: timedelta = timedelta(days=7),
        server: bool = False,
        not_before: datetime | None = None,
    ) -> x509.Certificate:
        start = not_before or datetime.now(UTC) - timedelta(minutes=5)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + lifetime)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    def pair(
        self, common_name: str, *, server: bool = False, lifetime: timedelta = timedelta(days=7),
        not_before: datetime | None = None,
    ) -> tuple[bytes, bytes]:  # fmt: skip
        """``(certificate PEM, private key PEM)``."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self.issue(
            key.public_key(),
            _name(common_name),
            server=server,
            lifetime=lifetime,
            not_before=not_before,
        )
        return cert_pem(cert), key_pem(key)

    def write(self, folder: Path) -> Path:
        path = folder / "ca.pem"
        path.write_bytes(cert_pem(self.cert))
        return path


def write_signify_secret(path: Path, cert: bytes, key: bytes) -> Path:
    path.write_text(
        json.dumps(
            {
                "certData": base64.b64encode(cert).decode(),
                "privateKeyData": base64.b64encode(key).decode(),
            }
        )
    )
    return path
