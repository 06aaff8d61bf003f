"""A local token service for a Distribution registry configured with ``auth: token``, the scheme
GHCR and Docker Hub use (https://distribution.github.io/distribution/spec/auth/token/).

``GET /token?service=...&scope=repository:<name>:pull,push`` checks HTTP basic auth against the
users it was given and answers with an RS256 JWT granting the requested actions the user may
have. Distribution 2.8 checks the signature through the ``x5c`` header: the token carries the
self-signed signing certificate, which the registry trusts through ``rootcertbundle``. Every
request is recorded, so tests can say which scopes were asked for and by whom, and which token a
client later presented."""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply

SERVICE = "test-registry"
ISSUER = "test-token-service"

# (user, repository) -> the actions the user may have there
Rule = Callable[[str, str], Iterable[str]]


@dataclass(frozen=True)
class TokenAuth:
    """What a registry's ``auth: token`` section names."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path


@dataclass(frozen=True)
class Access:
    type: str
    name: str
    actions: tuple[str, ...]


@dataclass(frozen=True)
class TokenRequest:
    """One request to the token endpoint; ``token`` is ``None`` when it was refused."""

    user: str | None  # None: anonymous
    service: str
    scopes: tuple[str, ...]  # as asked for
    granted: tuple[Access, ...]
    status: int
    token: str | None
    user_agent: str

    def allows(self, repository: str, *actions: str) -> bool:
        """Whether the token grants all of ``actions`` on ``repository`` (in any order)."""
        return any(
            access.type == "repository"
            and access.name == repository
            and set(actions) <= set(access.actions)
            for access in self.granted
        )

    @property
    def repositories(self) -> set[str]:
        """The repositories the request asked about, whether granted or not."""
        return {access.name for access in _parse_scopes(self.scopes) if access.type == "repository"}


def _parse_scopes(scopes: Iterable[str]) -> list[Access]:
    """``type:name:actions``; the name may hold a colon, so the actions are split off the end."""
    parsed = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind and name:
            parsed.append(Access(kind, name, tuple(a for a in actions.split(",") if a)))
    return parsed


def _everything(user: str, repository: str) -> Iterable[str]:
    return ("pull", "push", "delete", "*")


class TokenServer(FakeServer):
    def __init__(
        self,
        users: Mapping[str, str],
        *,
        allow: Rule = _everything,
        service: str = SERVICE,
        issuer: str = ISSUER,
        lifetime: int = 300,
    ) -> None:
        self.users = dict(users)
        self.allow = allow
        self.service = service
        self.issuer = issuer
        self.lifetime = lifetime
        self.requests: list[TokenRequest] = []
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = _self_signed(self.key, issuer)
        server = self

        class Handler(QuietHandler, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                if url.path != "/token":
                    reply(self, 404, {"errors": [{"code": "NOT_FOUND"}]})
                    return
                server._token(self, parse_qs(url.query))

        super().__init__(Handler)

    @property
    def realm(self) -> str:
        return f"{self.base_url}/token"

    @property
    def issued(self) -> list[TokenRequest]:
        return [request for request in self.requests if request.token is not None]

    def presented(self, authorization: str) -> TokenRequest | None:
        """The request a ``Bearer`` Authorization header's token was issued for, if any."""
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer":
            return None
        return next((r for r in self.issued if r.token == token), None)

    def write_bundle(self, folder: Path) -> TokenAuth:
        """Write the signing certificate as the registry's root bundle; the registry's config."""
        path = folder / "token-root.pem"
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return TokenAuth(
            realm=self.realm, service=self.service, issuer=self.issuer, rootcertbundle=path
        )

    def token(self, user: str | None, granted: Iterable[Access], service: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [
                {"type": a.type, "name": a.name, "actions": list(a.actions)} for a in granted
            ],
        }
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return jwt.encode(
            claims,
            self.key,
            algorithm="RS256",
            headers={"x5c": [base64.b64encode(der).decode()]},
        )

    # --- the endpoint ---------------------------------------------------------------------------

    def _token(self, handler: BaseHTTPRequestHandler, query: dict[str, list[str]]) -> None:
        service = query.get("service", [""])[0]
        scopes = tuple(query.get("scope", []))
        agent = handler.headers.get("User-Agent", "")
        user, password = _basic(handler.headers.get("Authorization", ""))
        if user is not None and (user not in self.users or self.users[user] != password):
            self.requests.append(TokenRequest(user, service, scopes, (), 401, None, agent))
            reply(
                handler,
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "invalid username or password"}]},
                {"WWW-Authenticate": f'Basic realm="{self.realm}"'},
            )
            return
        granted: list[Access] = []
        if user is not None:
            for access in _parse_scopes(scopes):
                allowed = (
                    set(self.allow(user, access.name)) if access.type == "repository" else set()
                )
                actions = tuple(a for a in access.actions if a in allowed)
                if actions:
                    granted.append(Access(access.type, access.name, actions))
        token = self.token(user, granted, service)
        self.requests.append(TokenRequest(user, service, scopes, tuple(granted), 200, token, agent))
        reply(
            handler,
            200,
            {
                "token": token,
                "access_token": token,
                "expires_in": self.lifetime,
                "issued_at": datetime.now(UTC).isoformat(),
            },
        )


def _basic(header: str) -> tuple[str | None, str | None]:
    kind, _, value = header.partition(" ")
    if kind.lower() != "basic":
        return None, None
    try:
        user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", None  # a malformed header is a failed login, not an anonymous one
    return user, password


def _self_signed(key: rsa.RSAPrivateKey, name: str) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
