"""OIDC token verification against the configured trust policy.

Only a configured issuer's keys are ever fetched; ``jku``, ``x5u``, ``x5c`` and embedded ``jwk``
headers are refused. Messages name the rule that failed with the expected and actual values,
never the token."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import jwt
from pydantic import BaseModel, ConfigDict, ValidationError

from image_builder import wire
from image_builder.config import TrustedIssuer
from image_builder.context import CIContext
from image_builder.errors import TrustError
from image_builder.http import Deadline, RetriesExhausted, RetryPolicy, send_with_retries

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 60
FORBIDDEN_HEADERS = ("jku", "x5u", "x5c", "jwk")
KEY_TYPE_FOR_ALG = {"RS256": "RSA", "ES256": "EC"}
# What each event may claim: the CI context's event (or ADO/Jenkins job type) → token events.
EVENTS_FOR_CONTEXT = {
    "pull_request": ("pull_request", "pull_request_target"),
    "pull_request_target": ("pull_request_target",),
}
_PULL_REF = re.compile(r"refs/pull/([0-9]+)/merge")


@dataclass(frozen=True, kw_only=True)
class VerifiedClaims:
    issuer: str
    repository: str
    repository_owner: str
    repository_owner_id: int
    event_name: str
    job_workflow_ref: str | None
    workflow_ref: str | None
    ref: str | None
    sha: str | None
    signing_allowed: bool
    signing_reason: str
    jti: str | None = None
    expires_at: int = 0
    image_namespaces: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self))


# --- keys -----------------------------------------------------------------------------------------


class _Unfetchable(Exception):
    """Why an issuer's keys could not be fetched, in a few words."""


# Fetching keys holds up the token's check: a few quick tries within the request timeout.
FETCH_SECONDS = 5.0
FETCH_RETRY = RetryPolicy(attempts=3, base_delay=0.2, max_delay=1.0, budget=FETCH_SECONDS)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)


class _Discovery(_Wire):
    """The parts of an OpenID Provider's configuration document that are read."""

    issuer: str
    jwks_uri: str


class _Jwk(_Wire):
    """One key of a JWK set; PyJWK reads the rest of its members."""

    model_config = ConfigDict(extra="allow", frozen=True, defer_build=True)
    kty: str
    kid: str | None = None


class _Jwks(_Wire):
    """A JWK set. Its keys are read one by one: a key that is not one (no ``kty``, a ``kid``
    that is no string, not an object) is skipped, as a key of a type we do not use is, so one
    odd entry never refuses every token of the issuer."""

    keys: list[object]

    def usable(self) -> list[_Jwk]:
        found = []
        for entry in self.keys:
            try:
                found.append(_Jwk.model_validate(entry))
            except ValidationError:
                continue
        return found


_W = TypeVar("_W", bound=_Wire)


def _read(model: type[_W], response: httpx.Response, what: str) -> _W:
    """``response``'s JSON as ``model``; what is missing or mistyped, in one line."""
    try:
        return wire.parse(model, response.content, what=what)
    except wire.WireError as exc:
        raise _Unfetchable(str(exc)) from None


def _answered(response: httpx.Response) -> str:
    return f"{response.request.url} answered {response.status_code}"


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK]
    fetched_at: float


class JwksCache:
    """Each issuer's key set, cached for ``ttl``. An unknown ``kid`` triggers at most one refetch
    per ``min_refresh``; a fetch is tried as ``retry`` allows (three times within 5 s), and when
    it fails keeps the last good set; with nothing cached it fails closed."""

    def __init__(
        self,
        *,
        http: httpx.Client,
        ttl: float = 600.0,
        min_refresh: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        retry: RetryPolicy = FETCH_RETRY,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = http
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._clock = clock
        self._retry = retry
        self._sleep = sleep
        self._sets: dict[str, _KeySet] = {}
        self._last_kid_refetch: dict[str, float] = {}
        self._lock = threading.Lock()

    def key(self, issuer: TrustedIssuer, kid: str) -> jwt.PyJWK:
        with self._lock:
            current = self._sets.get(issuer.issuer)
            now = self._clock()
            tried = False
            if current is None or now - current.fetched_at > self._ttl:
                tried = True
                refreshed = self._refresh(issuer, now)
                if isinstance(refreshed, _KeySet):
                    current = refreshed
                elif current is None:
                    # The error says why; a warning as well would say it twice.
                    raise TrustError(
                        f"cannot fetch the signing keys of {issuer.issuer} ({refreshed}), and none "
                        "are cached; refusing the token (fail closed)"
                    )
                else:
                    self._keep_stale(issuer, refreshed, now - current.fetched_at)
            if kid in current.keys:
                return current.keys[kid]
            if tried:
                # Fetched, or tried, just now: trying again at once cannot name another key.
                self._last_kid_refetch[issuer.issuer] = now
            last = self._last_kid_refetch.get(issuer.issuer, float("-inf"))
            if now - last >= self._min_refresh:
                self._last_kid_refetch[issuer.issuer] = now
                refreshed = self._refresh(issuer, now)
                if isinstance(refreshed, _KeySet):
                    current = refreshed
                    if kid in current.keys:
                        return current.keys[kid]
                else:
                    self._keep_stale(issuer, refreshed, now - current.fetched_at)
            raise TrustError(
                f"token rejected: kid {kid!r} is not in the key set of {issuer.issuer} "
                f"(known: {', '.join(sorted(current.keys)) or 'none'})"
            )

    def _refresh(self, issuer: TrustedIssuer, now: float) -> _KeySet | str:
        """The fetched key set, or why fetching it failed."""
        try:
            keys = self._fetch(issuer)
        except _Unfetchable as exc:
            return str(exc)
        entry = _KeySet(keys=keys, fetched_at=now)
        self._sets[issuer.issuer] = entry
        return entry

    def _keep_stale(self, issuer: TrustedIssuer, why: str, age: float) -> None:
        log.warning(
            "fetching the keys of %s failed (%s); using the key set fetched %.0f s ago",
            issuer.issuer,
            why,
            age,
        )

    def _fetch(self, issuer: TrustedIssuer) -> dict[str, jwt.PyJWK]:
        deadline = Deadline(FETCH_SECONDS)
        uri = issuer.jwks_uri
        if uri is None:
            url = issuer.issuer.rstrip("/") + "/.well-known/openid-configuration"
            discovery = _read(_Discovery, self._get(url, deadline), "the discovery document")
            if discovery.issuer != issuer.issuer:
                raise _Unfetchable(f"discovery names issuer {discovery.issuer!r}")
            uri = discovery.jwks_uri
        keys: dict[str, jwt.PyJWK] = {}
        for entry in _read(_Jwks, self._get(uri, deadline), "the key set").usable():
            if entry.kid is None:
                continue  # no token can name it
            try:
                keys[entry.kid] = jwt.PyJWK(entry.model_dump(exclude_none=True))
            except (jwt.PyJWTError, ValueError, TypeError):
                continue  # a key type we do not use, or a key that cannot be built
        return keys

    def _get(self, url: str, deadline: Deadline) -> httpx.Response:
        try:
            response = send_with_retries(
                # Each try gets what is left of the deadline, so the last one ends by it too.
                lambda: self._http.get(url, timeout=max(deadline.remaining(), 0.001)),
                what=f"GET {url}",
                policy=self._retry,
                deadline=deadline,
                sleep=self._sleep,
            )
        except RetriesExhausted as exc:
            last = exc.last
            if last.response is not None:
                raise _Unfetchable(_answered(last.response)) from None
            raise _Unfetchable(_first_line(last.cause or last)) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise _Unfetchable(_first_line(exc)) from None
        if not response.is_success:
            raise _Unfetchable(_answered(response))
        return response


# --- verification ---------------------------------------------------------------------------------


class TokenVerifier:
    def __init__(
        self,
        trust: Sequence[TrustedIssuer],
        jwks: JwksCache,
        *,
        leeway: int = LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._trust = {t.issuer: t for t in trust}
        self._jwks = jwks
        self._leeway = leeway
        self._clock = clock

    def verify(self, token: str) -> VerifiedClaims:
        token = token.strip().removeprefix("Bearer ").strip()
        if token.count(".") != 2:
            raise TrustError(
                "the token is not a JWT: expected three base64url parts separated by '.'"
            )
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            # PyJWT refuses a non-string kid, an unknown crit, bad base64 or JSON here.
            raise TrustError(f"the token is malformed: {exc}") from None
        if "crit" in header:
            raise TrustError(
                "token rejected: its header marks extensions as critical (crit), which this "
                "verifier does not implement"
            )
        for name in FORBIDDEN_HEADERS:
            if name in header:
                raise TrustError(
                    f"token rejected: its header carries {name!r}; keys come only from the configured "
                    "issuer's key set"
                )
        alg = header.get("alg")
        if alg not in KEY_TYPE_FOR_ALG:
            raise TrustError(
                f"token rejected: alg must be RS256 (or ES256 for EC keys), got {alg!r}"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TrustError(
                "token rejected: its header has no kid; the issuer's tokens always name their key"
            )
        issuer_name = unverified.get("iss")
        policy = self._trust.get(issuer_name) if isinstance(issuer_name, str) else None
        if policy is None:
            raise TrustError(
                f"token rejected: issuer {issuer_name!r} is not trusted; trusted: "
                + ", ".join(repr(i) for i in self._trust)
            )
        key = self._jwks.key(policy, kid)
        if key.key_type != KEY_TYPE_FOR_ALG[alg]:
            raise TrustError(
                f"token rejected: alg {alg} does not fit key {kid!r} of type {key.key_type}"
            )
        claims = self._decode(token, key, alg, policy)
        return self._check_policy(claims, policy)

    def _decode(
        self, token: str, key: jwt.PyJWK, alg: str, policy: TrustedIssuer
    ) -> dict[str, Any]:
        now = self._clock()
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                issuer=policy.issuer,
                leeway=self._leeway,
                options={"verify_aud": False, "require": ["iss", "aud", "exp", "iat"]},
            )
        except jwt.ExpiredSignatureError:
            exp = _time(jwt.decode(token, options={"verify_signature": False}).get("exp"))
            raise TrustError(
                f"token rejected: it expired at {exp} (leeway {self._leeway}s)"
            ) from None
        except jwt.ImmatureSignatureError:
            raise TrustError(
                f"token rejected: nbf or iat is in the future (leeway {self._leeway}s)"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TrustError(f"token rejected: required claim {exc.claim!r} is missing") from None
        except jwt.InvalidIssuerError:
            raise TrustError(f"token rejected: iss must be exactly {policy.issuer!r}") from None
        except jwt.InvalidSignatureError:
            raise TrustError(
                f"token rejected: the signature does not verify with the issuer's key {key.key_id!r}"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise TrustError(f"token rejected: {exc}") from None
        audience = claims.get("aud")
        if audience != policy.audience and audience != [policy.audience]:
            raise TrustError(
                f"token rejected: aud must be exactly {policy.audience!r}, got {audience!r}"
            )
        iat = claims.get("iat")
        if not isinstance(iat, (int, float)):
            raise TrustError("token rejected: iat must be a number")
        if iat > now + self._leeway:
            raise TrustError(f"token rejected: iat {_time(iat)} is in the future")
        age = now - iat
        limit = policy.max_token_age.total_seconds()
        if age > limit + self._leeway:
            raise TrustError(
                f"token rejected: it was issued {int(age)}s ago, more than max-token-age {int(limit)}s"
            )
        return claims

    def _check_policy(self, claims: Mapping[str, Any], policy: TrustedIssuer) -> VerifiedClaims:
        required = ["repository", "repository_owner", "repository_owner_id", "event_name"]
        if policy.job_workflow_refs != "any":
            required.insert(0, "job_workflow_ref")
        for name in required:
            if claims.get(name) in (None, ""):
                raise TrustError(f"token rejected: required claim {name!r} is missing")
        _check_types(claims)
        workflow = claims.get("job_workflow_ref")
        if policy.job_workflow_refs != "any" and workflow not in policy.job_workflow_refs:
            raise TrustError(
                f"token rejected: job_workflow_ref must be one of {list(policy.job_workflow_refs)}, "
                f"got {workflow!r}"
            )
        owner = str(claims["repository_owner"])
        owner_id = str(claims["repository_owner_id"])
        if not any(o.name == owner and str(o.id) == owner_id for o in policy.repository_owners):
            expected = [f"{o.name} ({o.id})" for o in policy.repository_owners]
            raise TrustError(
                f"token rejected: repository owner must be one of {expected}, got {owner} ({owner_id})"
            )
        event = str(claims["event_name"])
        if event not in policy.events:
            raise TrustError(
                f"token rejected: event_name must be one of {list(policy.events)}, got {event!r}"
            )
        ref = claims.get("ref")
        if ref is not None and not _valid_ref(ref):
            raise TrustError(f"token rejected: ref {ref!r} is not a valid git ref")
        allowed, reason = _signing_allowed(ref, policy.signing_refs)
        repository = str(claims["repository"])
        return VerifiedClaims(
            issuer=policy.issuer,
            repository=repository,
            repository_owner=owner,
            repository_owner_id=int(owner_id) if owner_id.isdecimal() else 0,
            event_name=event,
            job_workflow_ref=str(workflow) if workflow else None,
            workflow_ref=str(claims["workflow_ref"]) if claims.get("workflow_ref") else None,
            ref=ref if isinstance(ref, str) else None,
            sha=str(claims["sha"]) if claims.get("sha") else None,
            signing_allowed=allowed,
            signing_reason=reason,
            jti=claims.get("jti"),
            expires_at=int(claims["exp"]),
            image_namespaces=policy.namespaces_of(repository),
        )


# Claims are JSON: each one the policy reads must have the type GitHub gives it.
_CLAIM_TYPES: dict[str, tuple[type, ...]] = {
    "repository": (str,),
    "repository_owner": (str,),
    "repository_owner_id": (str, int),
    "event_name": (str,),
    "job_workflow_ref": (str,),
    "workflow_ref": (str,),
    "ref": (str,),
    "sha": (str,),
    "jti": (str,),
}


def _check_types(claims: Mapping[str, Any]) -> None:
    for name, types in _CLAIM_TYPES.items():
        value = claims.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            kind = "a string" if types == (str,) else "a string or an integer"
            raise TrustError(f"token rejected: claim {name!r} must be {kind}")
    if not re.fullmatch(r"[0-9]{1,20}", str(claims["repository_owner_id"])):
        raise TrustError("token rejected: claim 'repository_owner_id' must be a decimal id")
    if claims.get("jti") == "":
        raise TrustError("token rejected: claim 'jti' is empty")


def _valid_ref(ref: str) -> bool:
    """A git ref as GitHub sends it: refs/…, no empty, '.' or '..' component, no control
    characters (git check-ref-format forbids them all)."""
    parts = ref.split("/")
    return (
        ref.startswith("refs/")
        and all(p not in ("", ".", "..") for p in parts)
        and ".." not in ref
        and not any(c.isspace() or ord(c) < 32 or c in "~^:?*[\\" for c in ref)
    )


def path_match(pattern: str, value: str) -> bool:
    """An anchored match of a '/'-separated name: ``*`` matches within one part, ``**`` any
    number of whole parts; anything else matches itself."""
    return _match(pattern.split("/"), value.split("/"))


def _match(pattern: list[str], value: list[str]) -> bool:
    if not pattern:
        return not value
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_match(rest, value[i:]) for i in range(len(value) + 1))
    if not value:
        return False
    regex = "".join("[^/]*" if c == "*" else re.escape(c) for c in head)
    return re.fullmatch(regex, value[0]) is not None and _match(rest, value[1:])


def _signing_allowed(ref: str | None, patterns: Sequence[str] | None) -> tuple[bool, str]:
    if patterns is None:
        return True, "no signing-refs configured"
    if ref and any(path_match(p, ref) for p in patterns):
        return True, f"ref {ref} matches signing-refs"
    return False, f"ref {ref!r} does not match signing-refs {list(patterns)}"


def check_image_name(claims: VerifiedClaims, name: str) -> None:
    """A token authorizes only its repository's image namespace."""
    if not any(path_match(p, name) for p in claims.image_namespaces):
        raise TrustError(
            f"the token of {claims.repository} may not build or sign image {name!r}: its image "
            f"namespace is {', '.join(claims.image_namespaces)} (trust image-namespaces, or by "
            "default the repository's name as the first part of the image name)"
        )


def _time(value: object) -> str:
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return repr(value)


def check_context(claims: VerifiedClaims, ctx: CIContext, repo_flag: str | None) -> None:
    """The verified claims are the source of truth; refuse a CI context or flag that disagrees."""
    if ctx.repository and ctx.repository != claims.repository:
        raise TrustError(
            f"the token is for repository {claims.repository}, but the CI context says {ctx.repository}"
        )
    if repo_flag and repo_flag != claims.repository:
        raise TrustError(
            f"the token is for repository {claims.repository}, but --repo says {repo_flag}"
        )
    allowed = EVENTS_FOR_CONTEXT.get(ctx.event, (ctx.event,))
    if claims.event_name not in allowed:
        raise TrustError(
            f"the token is for event {claims.event_name}, but the CI context says {ctx.event}"
        )
    pull = _PULL_REF.fullmatch(claims.ref or "")
    if pull and ctx.is_pull_request and ctx.pr_number != int(pull.group(1)):
        raise TrustError(
            f"the token is for pull request {pull.group(1)}, but the build is for pull request "
            f"{ctx.pr_number}"
        )
    if not ctx.is_pull_request and claims.sha and ctx.commit_sha and claims.sha != ctx.commit_sha:
        # Pull-request tokens carry the base or merge commit, not the PR head, so they are not compared.
        raise TrustError(
            f"the token is for commit {claims.sha}, but the build is for commit {ctx.commit_sha}"
        )


def make_verifier(trust: Sequence[TrustedIssuer]) -> TokenVerifier:
    from image_builder.http import tls_context

    http = httpx.Client(
        verify=tls_context(), timeout=httpx.Timeout(5.0), trust_env=False, follow_redirects=False
    )
    return TokenVerifier(trust, JwksCache(http=http))


def verify_caller(
    trust: Sequence[TrustedIssuer],
    ctx: CIContext,
    token: str | None,
    *,
    repo_flag: str | None,
    env: Mapping[str, str],
    names: Sequence[str] = (),
) -> VerifiedClaims:
    """The trust gate: with a trust policy configured, nothing happens before the caller's token
    is verified, agrees with the CI context and the flags, and covers every image name in
    ``names``; a pull-request build's head commit is checked with GitHub when the policy names
    its API."""
    if token is None:
        raise TrustError(
            "this config has a trust policy: pass the caller's OIDC token in the AUTHORIZATION "
            "variable"
        )
    claims = make_verifier(trust).verify(token)
    check_caller(trust, claims, ctx, repo_flag=repo_flag, env=env, names=names)
    return claims


def check_caller(
    trust: Sequence[TrustedIssuer],
    claims: VerifiedClaims,
    ctx: CIContext,
    *,
    repo_flag: str | None,
    env: Mapping[str, str],
    names: Sequence[str] = (),
) -> None:
    """The gate's checks of a verified token: it agrees with the CI context and the flags, covers
    every image name in ``names``, and a pull request's head is the commit being built."""
    check_context(claims, ctx, repo_flag)
    for name in names:
        check_image_name(claims, name)
    check_pull_request(trust, claims, ctx, env)


def check_pull_request(
    trust: Sequence[TrustedIssuer], claims: VerifiedClaims, ctx: CIContext, env: Mapping[str, str]
) -> None:
    """A pull-request build must build its pull request's head, when the policy of the token's
    issuer names a GitHub API to ask (a token does not carry the head commit)."""
    if not ctx.is_pull_request:
        return
    policy = next(t for t in trust if t.issuer == claims.issuer)
    if policy.github_api is None:
        return
    from image_builder.github_api import check_head

    token_env = policy.github_api_token_env
    check_head(
        policy.github_api,
        repository=claims.repository,
        number=ctx.pr_number,
        commit=ctx.commit_sha,
        token=env.get(token_env) if token_env else None,
    )
