"""Token verification against a local OIDC issuer, and its enforcement in build and sign."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from image_builder.config import parse_config
from image_builder.context import CIContext
from image_builder.errors import ConfigError, TrustError
from image_builder.trust import (
    JwksCache,
    TokenVerifier,
    VerifiedClaims,
    check_context,
    check_image_name,
)
from tests.conftest import EVENTS, leaks
from tests.integration.conftest import Cli, Registry, Run, manifest_digest, secret
from tests.support.inputs import config_file, push_payload
from tests.support.oidc import WORKFLOW, FakeIssuer

CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """The in-process clients of a test close with it, so no socket outlives the test."""
    yield
    while CLIENTS:
        CLIENTS.pop().close()


def verifier(
    issuer: FakeIssuer, *, ttl: float = 600.0, trust: dict[str, str] | None = None
) -> TokenVerifier:
    config = parse_config(issuer.trust_yaml(**(trust or {})))
    CLIENTS.append(httpx.Client(timeout=2.0))
    return TokenVerifier(config.trust, JwksCache(http=CLIENTS[-1], ttl=ttl))


def rejected(issuer: FakeIssuer, token: str) -> str:
    with pytest.raises(TrustError) as caught:
        verifier(issuer).verify(token)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert token not in message
    return message


def test_a_good_token(issuer: FakeIssuer) -> None:
    claims = verifier(issuer, trust={"signing-refs": "[refs/heads/main, refs/tags/v*]"}).verify(
        issuer.token()
    )
    assert claims == VerifiedClaims(
        issuer=issuer.issuer,
        repository="org/app",
        repository_owner="org",
        repository_owner_id=123456,
        event_name="push",
        job_workflow_ref=WORKFLOW,
        workflow_ref="org/app/.github/workflows/build.yml@refs/heads/main",
        ref="refs/heads/main",
        sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        signing_allowed=True,
        signing_reason="ref refs/heads/main matches signing-refs",
        jti=claims.jti,
        expires_at=claims.expires_at,
        image_namespaces=("app", "app/**"),
    )
    assert claims.jti


def unsigned(claims: dict[str, object], alg: str = "none", kid: str = "key-1") -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': alg, 'kid': kid, 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none(issuer: FakeIssuer) -> None:
    message = rejected(issuer, unsigned(issuer.claims()))
    assert message == "token rejected: alg must be RS256 (or ES256 for EC keys), got 'none'"


def test_hs256_signed_with_the_public_key(issuer: FakeIssuer) -> None:
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "key-1", "typ": "JWT"}

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    import hashlib
    import hmac

    signing_input = f"{part(header)}.{part(issuer.claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert "got 'HS256'" in rejected(issuer, token)


def test_wrong_key(issuer: FakeIssuer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = rejected(issuer, issuer.token(key=other))
    assert message == "token rejected: the signature does not verify with the issuer's key 'key-1'"


def test_unknown_kid_and_a_flood_of_them(issuer: FakeIssuer) -> None:
    check = verifier(issuer)
    check.verify(issuer.token())
    assert issuer.jwks_fetches == 1
    for n in range(50):
        with pytest.raises(
            TrustError, match=rf"kid 'unknown-{n}' is not in the key set of {issuer.issuer}"
        ):
            check.verify(issuer.token(headers={"kid": f"unknown-{n}"}))
    assert (
        issuer.jwks_fetches == 2
    )  # one refetch for the first unknown kid, then none within a minute


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk", "x5c"])
def test_key_location_headers_are_refused(issuer: FakeIssuer, name: str) -> None:
    token = issuer.token(
        headers={name: "https://attacker.example/keys" if name != "jwk" else {"kty": "RSA"}}
    )
    message = rejected(issuer, token)
    assert message == (
        f"token rejected: its header carries {name!r}; keys come only from the configured issuer's key set"
    )
    assert issuer.jwks_fetches == 0


def test_expiry_and_leeway(issuer: FakeIssuer) -> None:
    now = int(time.time())
    assert "it expired at" in rejected(
        issuer, issuer.token(exp=now - 120, iat=now - 200, nbf=now - 200)
    )
    # Expired 30 s ago, inside the 60 s leeway: accepted, and the claims are the token's.
    claims = verifier(issuer).verify(issuer.token(exp=now - 30, iat=now - 200, nbf=now - 200))
    assert (claims.expires_at, claims.issuer, claims.repository, claims.sha) == (
        now - 30,
        issuer.issuer,
        "org/app",
        "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    )


def test_not_yet_valid(issuer: FakeIssuer) -> None:
    now = int(time.time())
    assert rejected(issuer, issuer.token(nbf=now + 600)) == (
        "token rejected: nbf or iat is in the future (leeway 60s)"
    )
    assert "is in the future" in rejected(issuer, issuer.token(iat=now + 600, nbf=None))


def test_old_iat(issuer: FakeIssuer) -> None:
    now = int(time.time())
    message = rejected(issuer, issuer.token(iat=now - 700, nbf=now - 700, exp=now + 300))
    assert message.startswith("token rejected: it was issued 70")
    assert message.endswith("s ago, more than max-token-age 600s")


@pytest.mark.parametrize(
    "claim",
    ["repository_owner_id", "repository", "event_name", "job_workflow_ref", "exp", "iat", "aud"],
)
def test_missing_claims(issuer: FakeIssuer, claim: str) -> None:
    assert (
        rejected(issuer, issuer.token(**{claim: None}))
        == f"token rejected: required claim {claim!r} is missing"
    )


def test_job_workflow_refs_any_is_explicit(issuer: FakeIssuer) -> None:
    claims = verifier(issuer, trust={"job-workflow-refs": "any"}).verify(
        issuer.token(job_workflow_ref=None)
    )
    assert (claims.repository, claims.job_workflow_ref) == ("org/app", None)


@pytest.mark.parametrize("variant", ["{issuer}/", "{https}", "{issuer}/x", "{upper}"])
def test_issuer_variants(issuer: FakeIssuer, variant: str) -> None:
    value = variant.format(
        issuer=issuer.issuer,
        https=issuer.issuer.replace("http://", "https://"),
        upper=issuer.issuer.replace("http", "HTTP"),
    )
    message = rejected(issuer, issuer.token(iss=value))
    assert message == f"token rejected: issuer {value!r} is not trusted; trusted: {issuer.issuer!r}"
    assert issuer.jwks_fetches == 0  # never fetch keys for an issuer that is not configured


def test_audience(issuer: FakeIssuer) -> None:
    assert rejected(issuer, issuer.token(aud="other")) == (
        "token rejected: aud must be exactly 'image-builder', got 'other'"
    )
    assert rejected(issuer, issuer.token(aud=["image-builder", "other"])) == (
        "token rejected: aud must be exactly 'image-builder', got ['image-builder', 'other']"
    )
    assert verifier(issuer).verify(issuer.token(aud=["image-builder"])).repository == "org/app"


@pytest.mark.parametrize(
    "ref",
    [
        "org/builder/.github/workflows/image-builder.yml@refs/heads/feature",
        "org/other/.github/workflows/image-builder.yml@refs/heads/main",
        "fork/builder/.github/workflows/image-builder.yml@refs/heads/main",
        "Org/Builder/.github/workflows/image-builder.yml@refs/heads/main",
        "org/builder/.github/workflows/image-builder.yml@refs/heads/main ",
    ],
)
def test_job_workflow_ref(issuer: FakeIssuer, ref: str) -> None:
    message = rejected(issuer, issuer.token(job_workflow_ref=ref))
    assert message == f"token rejected: job_workflow_ref must be one of {[WORKFLOW]}, got {ref!r}"


def test_trusted_workflow_ref_with_untrusted_job_workflow_ref(issuer: FakeIssuer) -> None:
    token = issuer.token(
        workflow_ref=WORKFLOW, job_workflow_ref="evil/x/.github/workflows/y.yml@refs/heads/main"
    )
    assert "job_workflow_ref must be one of" in rejected(issuer, token)


def test_owner_id_must_match(issuer: FakeIssuer) -> None:
    assert rejected(issuer, issuer.token(repository_owner_id="999")) == (
        "token rejected: repository owner must be one of ['org (123456)'], got org (999)"
    )


def test_disallowed_event(issuer: FakeIssuer) -> None:
    assert rejected(issuer, issuer.token(event_name="issue_comment")) == (
        "token rejected: event_name must be one of ['push', 'pull_request_target', 'merge_group', "
        "'workflow_dispatch', 'schedule'], got 'issue_comment'"
    )


def test_signing_refs(issuer: FakeIssuer) -> None:
    check = verifier(issuer, trust={"signing-refs": "[refs/heads/main, 'refs/tags/v*']"})
    assert check.verify(issuer.token(ref="refs/tags/v1.2")).signing_allowed
    claims = check.verify(issuer.token(ref="refs/heads/feature"))
    assert not claims.signing_allowed
    assert claims.signing_reason == (
        "ref 'refs/heads/feature' does not match signing-refs ['refs/heads/main', 'refs/tags/v*']"
    )


def test_jwks_failures_with_and_without_a_cached_set(issuer: FakeIssuer) -> None:
    issuer.failing = True
    cold = verifier(issuer)
    with pytest.raises(TrustError) as caught:
        cold.verify(issuer.token())
    assert str(caught.value) == (
        f"cannot fetch the signing keys of {issuer.issuer} ({issuer.issuer}/.well-known/"
        "openid-configuration answered 500), and none are cached; refusing the token (fail closed)"
    )
    issuer.failing = False
    warm = verifier(issuer, ttl=0.0)  # every use tries to refresh
    warm.verify(issuer.token())
    issuer.failing = True
    warm.verify(issuer.token())  # the last good key set is kept


def test_malformed_tokens(issuer: FakeIssuer) -> None:
    assert rejected(issuer, "not-a-token") == (
        "the token is not a JWT: expected three base64url parts separated by '.'"
    )
    assert rejected(issuer, "a.b.c").startswith("the token is malformed:")


def ctx(**values: object) -> CIContext:
    base: dict[str, object] = {
        "ci": "github",
        "event": "push",
        "job_type": "postsubmit",
        "repo_owner": "org",
        "repo_name": "app",
        "commit_sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    }
    base.update(values)
    return CIContext(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("context", "repo_flag", "message"),
    [
        (
            ctx(repo_name="other"),
            None,
            "the token is for repository org/app, but the CI context says org/other",
        ),
        (ctx(), "org/other", "the token is for repository org/app, but --repo says org/other"),
        (
            ctx(event="schedule", job_type="schedule"),
            None,
            "the token is for event push, but the CI context says schedule",
        ),
        (
            ctx(commit_sha="1" * 40),
            None,
            "the token is for commit 6113728f27ae82c7b1a177c8d03f9e96e0adf246, but the build is for commit "
            + "1" * 40,
        ),
    ],
)
def test_claims_and_context_must_agree(
    issuer: FakeIssuer, context: CIContext, repo_flag: str | None, message: str
) -> None:
    claims = verifier(issuer).verify(issuer.token())
    with pytest.raises(TrustError) as caught:
        check_context(claims, context, repo_flag)
    assert caught.value.exit_code == 2
    assert str(caught.value) == message
    check_context(claims, ctx(), "org/app")


# --- through the CLI --------------------------------------------------------------------------------


def test_verify_token_command(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    cfg = config_file(tmp_path, issuer, registry)
    token = secret(issuer.token())
    run = cli("verify-token", "--config", cfg, env={"AUTHORIZATION": token})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["job_workflow_ref"] == WORKFLOW
    bad = cli("verify-token", "--config", cfg, "--token", issuer.token(event_name="fork"))
    assert bad.returncode == 2
    assert "event_name must be one of" in bad.stderr
    assert token not in run.stdout + run.stderr + bad.stdout + bad.stderr


def test_build_requires_a_trusted_token(
    cli: Cli, issuer: FakeIssuer, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "Dockerfile").write_text(f"FROM {base_image}\nCOPY a /a\n")
    (ctx_dir / "a").write_text("a\n")
    cfg = config_file(tmp_path, issuer, registry)
    outputs = tmp_path / "outputs"
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": push_payload(tmp_path),
        "GITHUB_OUTPUT": str(outputs),
    }
    args = ("build", "--name", "app", "--context", str(ctx_dir), "--config", cfg, "--tag", "t")

    missing = cli(*args, env=env)
    assert missing.returncode == 2
    assert "this config has a trust policy: pass the caller's OIDC token" in missing.stderr
    assert "STEP 1" not in missing.stderr  # nothing was built

    forged = cli(*args, env={**env, "AUTHORIZATION": issuer.token(repository_owner_id="1")})
    assert forged.returncode == 2
    assert "repository owner must be one of" in forged.stderr

    token = secret(issuer.token())
    accepted = cli(*args, "--oidc-token", token, env=env)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.report["pushed"] is True
    # the token appears nowhere but in the ::add-mask:: directive the runner consumes
    texts = (accepted.stdout, accepted.stderr, outputs.read_text(), json.dumps(accepted.report))
    assert leaks(token, *texts) == []
    assert accepted.stderr.count(f"::add-mask::{token}") == 1
    assert (
        "::warning::--oidc-token shows the secret to every process on this machine (ps); pass it "
        "in the AUTHORIZATION variable instead"
    ) in accepted.stderr.splitlines()


def test_signing_needs_a_signing_ref(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    ctx_dir = tmp_path / "ctx"
    ctx_dir.mkdir()
    (ctx_dir / "Dockerfile").write_text("FROM scratch\n")
    signer = (
        "sign-config:\n  enabled-signers: {'*': [release-key]}\n  signers:\n"
        "    - {name: release-key, type: cosign, config: {private-key: /nonexistent.key}}\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        f"registry: {registry.address}/trusted\n"
        + issuer.trust_yaml(**{"signing-refs": "[refs/heads/main]"})
        + signer
    )
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": push_payload(tmp_path),
    }
    args = (
        "build",
        "--name",
        "app",
        "--context",
        str(ctx_dir),
        "--config",
        str(path),
        "--dry-run",
    )
    on_main = cli(*args, env={**env, "AUTHORIZATION": issuer.token()})
    assert on_main.returncode == 0, on_main.stderr
    assert json.loads(on_main.stdout)["signers"][0]["runs"] is True
    on_branch = cli(*args, env={**env, "AUTHORIZATION": issuer.token(ref="refs/heads/feature")})
    assert on_branch.returncode == 0, on_branch.stderr
    (choice,) = json.loads(on_branch.stdout)["signers"]
    assert choice["runs"] is False
    assert choice["reason"] == (
        "enabled under '*', but ref 'refs/heads/feature' does not match signing-refs ['refs/heads/main']"
    )
    sign = cli(
        "sign", "--config", str(path), "--images-to-sign", f"{registry.address}/trusted/app:t",
        env={**env, "AUTHORIZATION": issuer.token(ref="refs/heads/feature")},
    )  # fmt: skip
    assert sign.returncode == 2
    assert (
        "signing refused by the trust policy: ref 'refs/heads/feature' does not match"
        in sign.stderr
    )


# --- issue 13: what a verified token authorizes ---------------------------------------------------


def test_header_kid_of_another_type_and_crit_are_refusals(issuer: FakeIssuer) -> None:
    def forged(header: dict[str, object]) -> str:
        def part(value: object) -> str:
            return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

        return f"{part({'alg': 'RS256', 'typ': 'JWT', **header})}.{part(issuer.claims())}.c2ln"

    assert rejected(issuer, forged({"kid": 7})) == (
        "the token is malformed: Key ID header parameter must be a string"
    )
    assert rejected(issuer, issuer.token(headers={"crit": ["exp"]})).startswith(
        "the token is malformed:"
    )
    assert rejected(issuer, forged({"kid": "key-1", "crit": ["b64"], "b64": True})) == (
        "token rejected: its header marks extensions as critical (crit), which this verifier "
        "does not implement"
    )
    assert issuer.jwks_fetches == 0


@pytest.mark.parametrize(
    ("claim", "value", "message"),
    [
        ("repository", ["org/app"], "token rejected: claim 'repository' must be a string"),
        ("event_name", {"a": 1}, "token rejected: claim 'event_name' must be a string"),
        ("ref", 7, "token rejected: claim 'ref' must be a string"),
        ("sha", True, "token rejected: claim 'sha' must be a string"),
        ("jti", 5, "token rejected: JWT ID must be a string"),
        (
            "repository_owner_id",
            True,
            "token rejected: claim 'repository_owner_id' must be a string or an integer",
        ),
        (
            "repository_owner_id",
            "12a",
            "token rejected: claim 'repository_owner_id' must be a decimal id",
        ),
        ("job_workflow_ref", 1, "token rejected: claim 'job_workflow_ref' must be a string"),
        ("exp", "soon", "token rejected: Expiration Time claim (exp) must be an integer."),
        ("iat", "now", "token rejected: Issued At claim (iat) must be an integer."),
        ("nbf", [], "token rejected: Not Before claim (nbf) must be an integer."),
        ("ref", "refs/tags/vx/../../heads/evil", None),
        ("ref", "refs/heads//main", None),
    ],
)
def test_malformed_but_parseable_claims_are_refusals(
    issuer: FakeIssuer, claim: str, value: object, message: str | None
) -> None:
    expected = message or f"token rejected: ref {value!r} is not a valid git ref"
    claims: dict[str, Any] = {claim: value}
    assert rejected(issuer, issuer.token(**claims)) == expected


def test_an_unknown_kid_right_after_a_cold_fetch_fetches_once(issuer: FakeIssuer) -> None:
    with pytest.raises(TrustError, match="kid 'rotated' is not in the key set"):
        verifier(issuer).verify(issuer.token(headers={"kid": "rotated"}))
    assert issuer.jwks_fetches == 1


def test_signing_refs_are_anchored_per_part(issuer: FakeIssuer) -> None:
    check = verifier(issuer, trust={"signing-refs": "[refs/heads/main, 'refs/tags/v*']"})
    assert check.verify(issuer.token(ref="refs/tags/v1.2.3")).signing_allowed
    for ref in ("refs/tags/v1/evil", "refs/tags/x-v1", "refs/heads/main/x", "refs/heads/mainx"):
        assert not check.verify(issuer.token(ref=ref)).signing_allowed, ref
    deep = verifier(issuer, trust={"signing-refs": "['refs/heads/release/**']"})
    assert deep.verify(issuer.token(ref="refs/heads/release/1.x/hotfix")).signing_allowed


@pytest.mark.parametrize(
    "ref", ["refs/tags/v*/../..", "refs/heads//main", "heads/main", "refs/heads/"]
)
def test_loose_signing_refs_are_refused_at_load(issuer: FakeIssuer, ref: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(issuer.trust_yaml(**{"signing-refs": f"['{ref}']"}))
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "config.yaml: 'trust[0].signing-refs': expected a full ref such as refs/heads/main or "
        f"refs/tags/v*, without '..' or '//'; got {ref!r}"
    )


def test_a_pull_request_token_is_tied_to_its_pull_request(issuer: FakeIssuer) -> None:
    claims = verifier(issuer, trust={"events": "[pull_request]"}).verify(
        issuer.token(event_name="pull_request", ref="refs/pull/5/merge")
    )
    pr7 = ctx(event="pull_request", job_type="presubmit", pr_number=7)
    with pytest.raises(TrustError) as caught:
        check_context(claims, pr7, None)
    assert caught.value.exit_code == 2
    assert str(caught.value) == (
        "the token is for pull request 5, but the build is for pull request 7"
    )
    check_context(claims, ctx(event="pull_request", job_type="presubmit", pr_number=5), None)


@pytest.mark.parametrize(
    ("namespaces", "name", "allowed"),
    [
        (None, "app", True),
        (None, "app/web", True),
        (None, "app/web/debug", True),
        (None, "payments/app", False),
        (None, "apps/web", False),
        (None, "org/app", False),
        ("{org/app: [test-infra/*]}", "test-infra/ginkgo", True),
        ("{org/app: [test-infra/*]}", "test-infra/a/b", False),
        ("{org/app: [test-infra/*]}", "app/web", False),
        ("{org: ['shared/**']}", "shared/a/b", True),
        ("{org/other: ['app/**']}", "app/web", True),  # the default still holds for org/app
    ],
)
def test_image_namespaces(
    issuer: FakeIssuer, namespaces: str | None, name: str, allowed: bool
) -> None:
    trust = {"image-namespaces": namespaces} if namespaces else None
    claims = verifier(issuer, trust=trust).verify(issuer.token())
    if allowed:
        check_image_name(claims, name)
        return
    with pytest.raises(TrustError) as caught:
        check_image_name(claims, name)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(
        f"the token of org/app may not build or sign image {name!r}: its image namespace is "
    )


def refusal(run: Run) -> str:
    """The one-line message of a run refused with exit 2 (its last stderr line)."""
    assert run.returncode == 2, run.stdout + run.stderr
    return run.stderr.strip().splitlines()[-1].removeprefix("::error::")


def _trusted_env(tmp_path: Path, token: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": push_payload(tmp_path),
        "AUTHORIZATION": token,
        **extra,
    }


def _scratch_context(tmp_path: Path) -> str:
    folder = tmp_path / "ctx"
    folder.mkdir(exist_ok=True)
    (folder / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    (folder / "a").write_text("a\n")
    return str(folder)


def test_a_token_cannot_build_another_repositorys_image(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    cfg = config_file(tmp_path, issuer, registry)
    env = _trusted_env(tmp_path, issuer.token())
    run = cli("build", "--name", "payments/app", "--context", _scratch_context(tmp_path),
              "--config", cfg, "--tag", "latest", env=env)  # fmt: skip
    assert refusal(run).endswith(
        "the token of org/app may not build or sign image 'payments/app': its image namespace is "
        "app, app/** (trust image-namespaces, or by default the repository's name as the first "
        "part of the image name)"
    )
    assert "STEP" not in run.stderr
    assert manifest_digest(f"{registry.address}/trusted/payments/app:latest") is None


def test_a_token_builds_once(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    cfg = config_file(tmp_path, issuer, registry)
    token = secret(issuer.token())
    env = _trusted_env(tmp_path, token)
    checked = cli("verify-token", "--config", cfg, "--name", "app/web", env=env)
    assert checked.returncode == 0, checked.stderr  # checking does not spend the token
    args = ("build", "--name", "app/web", "--context", _scratch_context(tmp_path),
            "--config", cfg)  # fmt: skip
    first = cli(*args, "--tag", "one", env=env)
    assert first.returncode == 0, first.stderr
    replay = cli(*args, "--tag", "two", env=env)
    assert refusal(replay).endswith(
        "token rejected: it was already used to build (a token authorizes one build and one "
        "signing); start a new run for a new token"
    )
    assert manifest_digest(f"{registry.address}/trusted/app/web:two") is None
    fresh = cli(*args, "--tag", "two", env={**env, "AUTHORIZATION": issuer.token()})
    assert fresh.returncode == 0, fresh.stderr


def test_a_set_up_refusal_does_not_spend_the_token(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    missing_key = (
        "sign-config:\n  enabled-signers: {'*': [release-key]}\n  signers:\n"
        f"    - {{name: release-key, type: cosign, config: {{private-key: {tmp_path}/gone.key}}}}\n"
    )
    cfg = config_file(tmp_path, issuer, registry, missing_key)
    env = _trusted_env(tmp_path, issuer.token(), COSIGN_PASSWORD="")
    args = ("build", "--name", "app/web", "--context", _scratch_context(tmp_path), "--config", cfg)
    refused = cli(*args, env=env)
    assert refusal(refused) == (
        f"signer release-key: cannot read private key {tmp_path}/gone.key: No such file "
        "or directory"
    )
    config_file(tmp_path, issuer, registry)  # the operator fixes the machine's set-up
    again = cli(*args, env=env)
    assert again.returncode == 0, again.stderr


def test_a_token_without_jti_cannot_be_spent(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    cfg = config_file(tmp_path, issuer, registry)
    run = cli("build", "--name", "app/web", "--context", _scratch_context(tmp_path),
              "--config", cfg, env=_trusted_env(tmp_path, issuer.token(jti=None)))  # fmt: skip
    assert refusal(run).endswith(
        "token rejected: it has no jti claim, so its single use cannot be enforced"
    )


def test_sign_signs_only_the_tokens_own_images_in_configured_registries(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    key = tmp_path / "release"
    made = cli("keygen", "--output-key-prefix", str(key), env={"COSIGN_PASSWORD": ""})
    assert made.returncode == 0, made.stderr
    signer = (
        "sign-config:\n  enabled-signers: {'*': [release-key]}\n  signers:\n"
        f"    - {{name: release-key, type: cosign, config: {{private-key: {key}.key}}}}\n"
    )
    cfg = config_file(tmp_path, issuer, registry, signer)
    env = _trusted_env(tmp_path, issuer.token(), COSIGN_PASSWORD="")
    other = f"{registry.address}/trusted/other-team/unreviewed:1"
    run = cli("sign", "--config", cfg, "--images-to-sign", other, env=env)
    assert refusal(run).endswith(
        "the token of org/app may not build or sign image 'other-team/unreviewed': its image "
        "namespace is app, app/** (trust image-namespaces, or by default the repository's name "
        "as the first part of the image name)"
    )
    elsewhere = f"{registry.address}/elsewhere/app:1"
    run = cli("sign", "--config", cfg, "--images-to-sign", elsewhere, env=env)
    assert refusal(run).endswith(
        f"{elsewhere} is not in a release registry of this config ({registry.address}/trusted); "
        "only images built here are signed here"
    )
    with_dev = Path(cfg).read_text() + f"dev-registry: {registry.address}/trusted/dev\n"
    Path(cfg).write_text(with_dev)
    pr_image = f"{registry.address}/trusted/dev/app:PR-1"
    run = cli("sign", "--config", cfg, "--images-to-sign", pr_image, env=env)
    assert refusal(run).endswith(
        f"{pr_image} is in the dev registry {registry.address}/trusted/dev; images there are "
        "never signed"
    )


def test_a_pull_request_build_is_checked_against_github(
    cli: Cli, issuer: FakeIssuer, registry: Registry, tmp_path: Path
) -> None:
    from tests.support.fake_github import FakeGitHub

    github = FakeGitHub().start()
    try:
        payload = json.loads((EVENTS / "pull_request_target.synchronize.json").read_text())
        head = payload["pull_request"]["head"]["sha"]
        repository = payload["repository"]["full_name"]
        (tmp_path / "pr.json").write_text(json.dumps(payload))
        owner = payload["repository"]["owner"]
        cfg = tmp_path / "config.yaml"
        cfg.write_text(
            f"registry: {registry.address}/prod\ndev-registry: {registry.address}/dev\n"
            f"seen-tokens: {tmp_path}/seen.json\n"
            + issuer.trust_yaml(
                **{
                    "repository-owners": f"[{{name: {owner['login']}, id: {owner['id']}}}]",
                    "github-api": github.base_url,
                    "github-api-token-env": "GITHUB_API_TOKEN",
                }
            )
        )
        claims = {
            "repository": repository,
            "repository_owner": owner["login"],
            "repository_owner_id": str(owner["id"]),
            "event_name": "pull_request_target",
            "ref": "refs/heads/master",
        }
        env = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": "pull_request_target",
            "GITHUB_EVENT_PATH": str(tmp_path / "pr.json"),
            "GITHUB_API_TOKEN": secret("ghs_fakeapitoken0123456789"),
        }
        args = ("build", "--name", "hello-world/app", "--context", _scratch_context(tmp_path),
                "--config", str(cfg), "--dry-run")  # fmt: skip
        github.pulls[(repository, payload["number"])] = "f" * 40  # the PR moved on
        moved = cli(*args, env={**env, "AUTHORIZATION": issuer.token(**claims)})
        assert refusal(moved).endswith(
            f"pull request {payload['number']}'s head is {'f' * 40}, but the build is for "
            f"commit {head}"
        )
        github.pulls[(repository, payload["number"])] = head
        fine = cli(*args, env={**env, "AUTHORIZATION": issuer.token(**claims)})
        assert fine.returncode == 0, fine.stderr
        assert json.loads(fine.stdout)["registries"] == [f"{registry.address}/dev"]
        assert github.requests[-1] == (
            f"/repos/{repository}/pulls/{payload['number']}",
            "Bearer ghs_fakeapitoken0123456789",
        )
        del github.pulls[(repository, payload["number"])]
        gone = cli(*args, env={**env, "AUTHORIZATION": issuer.token(**claims)})
        assert refusal(gone).endswith(
            f"pull request {payload['number']} does not exist in {repository}"
        )
    finally:
        github.stop()


def test_a_pull_request_build_never_reaches_the_release_registry(
    cli: Cli, registry: Registry, tmp_path: Path
) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"registry: {registry.address}/prod\n")
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "pull_request_target",
        "GITHUB_EVENT_PATH": str(EVENTS / "pull_request_target.synchronize.json"),
    }
    run = cli("build", "--name", "app", "--context", _scratch_context(tmp_path),
              "--config", str(cfg), "--tag", "latest", env=env)  # fmt: skip
    assert refusal(run).endswith(
        "a presubmit build needs dev-registry in the config: pull-request and merge-group images "
        f"never go to the release registry ({registry.address}/prod)"
    )
    assert manifest_digest(f"{registry.address}/prod/app:latest") is None
    cfg.write_text(f"registry: {registry.address}/prod\ndev-registry: {registry.address}/prod\n")
    run = cli("build", "--name", "app", "--context", _scratch_context(tmp_path),
              "--config", str(cfg), env=env)  # fmt: skip
    assert run.returncode == 2
    assert "holds the release registry" in run.stderr


def test_verify_refuses_an_index_with_too_many_entries_after_one_request(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """An index of 3000 entries used to cost 3001 requests; past max-manifest-entries it is
    refused as soon as it is read."""
    from image_builder.oci import parse_reference
    from image_builder.registry import OCI_INDEX, RegistryClient

    CLIENTS.append(httpx.Client())
    client = RegistryClient(
        http=CLIENTS[-1], credentials=lambda host: None, plain_http=lambda host: True
    )
    base = client.get_manifest(parse_reference(base_image))
    entry = {"mediaType": base.media_type, "digest": base.digest, "size": base.size}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * 65}
    ref = parse_reference(base_image).with_tag("many")
    client.put_manifest(ref, json.dumps(index).encode(), OCI_INDEX)
    made = cli("keygen", "--output-key-prefix", str(tmp_path / "k"), env={"COSIGN_PASSWORD": ""})
    assert made.returncode == 0, made.stderr
    run = cli("verify", str(ref), "--key", str(tmp_path / "k.pub"))
    assert run.returncode == 1
    assert run.stderr.strip().endswith(
        "lists 65 manifests, more than max-manifest-entries (64); refusing to read it"
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text("max-manifest-entries: 65\n")
    wider = cli("verify", str(ref), "--key", str(tmp_path / "k.pub"), "--config", str(cfg))
    assert wider.returncode == 1
    assert "no signature" in wider.stderr  # read, and checked entry by entry
