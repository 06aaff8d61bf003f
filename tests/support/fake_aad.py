"""A local fake of Azure AD's token service for a tenant: OpenID discovery and the v2.0 token
endpoint (client-credentials grant), over HTTPS with a certificate from the test CA.

Every grant issues a new access token (``<access_token>`` for the first, then ``-2``, ``-3``…),
so a fake Azure DevOps can let tokens expire (``valid``). ``refuse_after`` turns the client away
from that many grants on, as after a rotated secret."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs

from tests.support.fake_server import FakeServer, tls_context
from tests.support.pki import CA
from tests.support.replies import QuietHandler, reply


class FakeAad(FakeServer):
    def __init__(
        self, ca: CA, folder: Path, *, client_id: str, client_secret: str, access_token: str
    ) -> None:
        self.grants: list[dict[str, list[str]]] = []
        self.issued: dict[str, float] = {}  # token -> when it was issued (monotonic)
        self.refuse_after: int | None = None
        cert, key = ca.pair("127.0.0.1", server=True)
        (folder / "aad.pem").write_bytes(cert)
        (folder / "aad.key").write_bytes(key)
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                tenant = self.path.strip("/").split("/")[0]
                if self.path.endswith("/v2.0/.well-known/openid-configuration"):
                    base = f"{fake.url}/{tenant}"
                    self._send(200, {
                        "issuer": f"{base}/v2.0",
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                    })  # fmt: skip
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = parse_qs(self.rfile.read(length).decode())
                fake.grants.append(form)
                refused = fake.refuse_after is not None and len(fake.grants) > fake.refuse_after
                if (
                    form.get("client_id") == [client_id]
                    and form.get("client_secret") == [client_secret]
                    and not refused
                ):
                    number = len(fake.issued) + 1
                    token = access_token if number == 1 else f"{access_token}-{number}"
                    fake.issued[token] = time.monotonic()
                    self._send(
                        200,
                        {
                            "token_type": "Bearer",
                            "expires_in": 3599,
                            "ext_expires_in": 3599,
                            "access_token": token,
                        },
                    )
                else:
                    self._send(
                        401,
                        {
                            "error": "invalid_client",
                            "error_description": "AADSTS7000215: Invalid client secret provided.",
                        },
                    )

            def _send(self, status: int, body: object) -> None:
                reply(self, status, body)

        super().__init__(Handler, tls=tls_context(folder / "aad.pem", folder / "aad.key"))

    @property
    def url(self) -> str:
        return self.base_url

    def valid(self, uses: int) -> Callable[[str], bool]:
        """An Authorization check that accepts each of this fake's tokens ``uses`` times: it
        expires in the middle of a run, whatever the machine's speed."""
        counts: dict[str, int] = {}

        def check(header: str) -> bool:
            token = header.removeprefix("Bearer ")
            if token not in self.issued:
                return False
            counts[token] = counts.get(token, 0) + 1
            return counts[token] <= uses

        return check
