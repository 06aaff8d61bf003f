"""A local fake of the Signify signing service: HTTPS that requires a client certificate from the
test CA, records every request, and answers from a script (202 by default).

``POST /sign`` takes the trustedCollections body; ``POST /rotate`` takes ``{"csr": <base64 PEM>}``
and answers ``{"certData": <base64 PEM>}``, a certificate from the CA for the CSR's key."""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography import x509

from tests.support.fake_server import FakeServer, tls_context
from tests.support.pki import CA, cert_pem
from tests.support.replies import QuietHandler, reply


@dataclass
class Recorded:
    path: str
    body: bytes
    client_subject: str

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False  # close the connection without answering


class FakeSignify(FakeServer):
    def __init__(self, ca: CA, folder: Path) -> None:
        self.ca = ca
        self.requests: list[Recorded] = []
        self.script: list[Reply] = []  # consumed first, then 202
        self.rotate_reply: Reply | None = None  # every /rotate answer, instead of a certificate
        self.rotate_script: list[Reply] = []  # consumed first
        self.rotate_lifetime = timedelta(days=7)
        cert, key = ca.pair("127.0.0.1", server=True)
        (folder / "server.pem").write_bytes(cert)
        (folder / "server.key").write_bytes(key)
        context = tls_context(
            folder / "server.pem", folder / "server.key", client_ca=ca.write(folder)
        )
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                peer = (
                    self.connection.getpeercert()
                    if isinstance(self.connection, ssl.SSLSocket)
                    else None
                )
                subject = ""
                if peer:
                    rdns: Any = peer.get("subject", ())
                    subject = ",".join(f"{k}={v}" for rdn in rdns for k, v in rdn)
                fake.requests.append(Recorded(self.path, body, subject))
                if self.path == "/rotate":
                    self._rotate(body)
                    return
                reply = (
                    fake.script.pop(0) if fake.script else Reply(202, body=b'{"status":"accepted"}')
                )
                if reply.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                self._send(reply)

            def _rotate(self, body: bytes) -> None:
                answer = fake.rotate_script.pop(0) if fake.rotate_script else fake.rotate_reply
                if answer is not None and answer.drop:
                    self.close_connection = True
                    self.connection.close()
                    return
                if answer is not None:
                    self._send(answer)
                    return
                csr = x509.load_pem_x509_csr(base64.b64decode(json.loads(body)["csr"]))
                cert = fake.ca.issue(csr.public_key(), csr.subject, lifetime=fake.rotate_lifetime)  # type: ignore[arg-type]
                issued = json.dumps(
                    {"certData": base64.b64encode(cert_pem(cert)).decode()}
                ).encode()
                self._send(Reply(200, {"Content-Type": "application/json"}, issued))

            def _send(self, answer: Reply) -> None:
                reply(self, answer.status, answer.body, answer.headers)

        super().__init__(Handler, tls=context)

    @property
    def url(self) -> str:
        return self.base_url

    def sign_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/sign"]
