"""A local fake of an OIDC issuer (GitHub's token service): discovery and JWKS over HTTP, RSA keys
made here, and a token minter. It counts JWKS fetches and can be told to fail. Unit tests mint
with :class:`TokenMinter` alone, without the server."""

from __future__ import annotations

import base64
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply

WORKFLOW = "org/builder/.github/workflows/image-builder.yml@refs/heads/main"


def _part(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class TokenMinter:
    """GitHub-shaped tokens of ``issuer``, signed with an RSA key made here, and the trust policy
    that names that issuer."""

    kid = "key-1"

    def __init__(self, issuer: str = "https://issuer.invalid") -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._issuer = issuer

    @property
    def issuer(self) -> str:
        return self._issuer

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """GitHub-shaped claims for a push to main of org/app, issued now."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "image-builder",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "sub": "repo:org/app:ref:refs/heads/main",
            "repository": "org/app",
            "repository_owner": "org",
            "repository_owner_id": "123456",
            "event_name": "push",
            "ref": "refs/heads/main",
            "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "workflow_ref": "org/app/.github/workflows/build.yml@refs/heads/main",
            "job_workflow_ref": WORKFLOW,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        *,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        algorithm: str | None = None,  # RS256
        **claims: Any,
    ) -> str:
        return jwt.encode(
            self.claims(**claims),
            key or self.key,
            algorithm=algorithm or "RS256",
            headers={"kid": self.kid, **(headers or {})},
        )

    def with_header(self, header: dict[str, object]) -> str:
        """A token whose header PyJWT would not write (an integer kid), signed for real."""
        signing_input = f"{_part({'alg': 'RS256', 'typ': 'JWT', **header})}.{_part(self.claims())}"
        signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
            signing_input.encode(), self.key
        )
        return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"

    def unsigned(self) -> str:
        return f"{_part({'alg': 'none', 'kid': self.kid})}.{_part(self.claims())}."

    def trust_yaml(self, **overrides: str) -> str:
        values = {
            "audience": "image-builder",
            "job-workflow-refs": f"[{WORKFLOW}]",
            "repository-owners": "[{name: org, id: 123456}]",
            "events": "[push, pull_request_target, merge_group, workflow_dispatch, schedule]",
            "max-token-age": "10m",
        }
        values.update(overrides)
        lines = [f"  - issuer: {self.issuer}"] + [f"    {k}: {v}" for k, v in values.items() if v]
        return "trust:\n" + "\n".join(lines) + "\n"


class FakeIssuer(TokenMinter, FakeServer):
    """The issuer's discovery document and key set, served; tokens minted by its key."""

    def __init__(self) -> None:
        TokenMinter.__init__(self)
        self.jwks_fetches = 0
        self.failing = False
        fake = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if fake.failing:
                    self._send(500, {"error": "down"})
                elif self.path == "/.well-known/openid-configuration":
                    self._send(200, {"issuer": fake.issuer, "jwks_uri": f"{fake.issuer}/jwks"})
                elif self.path == "/jwks":
                    fake.jwks_fetches += 1
                    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(fake.key.public_key()))
                    self._send(
                        200, {"keys": [{**public, "kid": fake.kid, "use": "sig", "alg": "RS256"}]}
                    )
                else:
                    self._send(404, {})

            def _send(self, status: int, body: object) -> None:
                reply(self, status, body)

        FakeServer.__init__(self, Handler)

    @property
    def issuer(self) -> str:
        return self.base_url


class TokenEndpoint(FakeServer):
    """The runner's token service (``ACTIONS_ID_TOKEN_REQUEST_URL``): answers
    ``{"value": <JWT>}`` for the requested audience, signed by ``issuer``, when the request carries
    the runner's request token."""

    REQUEST_TOKEN = "runner-request-token"

    def __init__(self, issuer: FakeIssuer, **claims: Any) -> None:
        self.issuer = issuer
        self.claims = claims
        self.audiences: list[str] = []
        endpoint = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlsplit

                if self.headers.get("Authorization") != f"Bearer {TokenEndpoint.REQUEST_TOKEN}":
                    reply(self, 401, {"message": "bad request token"})
                    return
                audience = parse_qs(urlsplit(self.path).query).get("audience", [""])[0]
                endpoint.audiences.append(audience)
                reply(self, 200, {"value": endpoint.issuer.token(aud=audience, **endpoint.claims)})

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"{self.base_url}/token?api-version=2.0"
