"""The bad-input corpus: every case is refused with exit code 2 and a one-line message that
names the problem, before anything is built, and never with a traceback."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import EVENTS
from tests.integration.conftest import Cli
from tests.support.oidc import FakeIssuer

PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    message: str
    env: dict[str, str] = field(default_factory=dict)
    config: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    token: Callable[[FakeIssuer], str] | None = None


def _with_header(issuer: FakeIssuer, header: dict[str, object]) -> str:
    """A token whose header PyJWT would not write (an integer kid), signed for real."""
    import base64

    import jwt

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'RS256', 'typ': 'JWT', **header})}.{part(issuer.claims())}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), issuer.key
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def build(*extra: str) -> tuple[str, ...]:
    return ("build", "--name", "team/app", "--context", "ctx", "--dry-run", *extra)


def tag(value: str) -> tuple[str, ...]:
    return build("--tag", value)


TRUST = "trust-placeholder"

CASES = [
    # --- tokens (trust) -------------------------------------------------------------------------
    Case(
        "token-missing",
        build(),
        "this config has a trust policy: pass the caller's OIDC token",
        config=TRUST,
    ),
    Case(
        "token-not-jwt",
        build(),
        "the token is not a JWT",
        config=TRUST,
        env={"AUTHORIZATION": "garbage"},
    ),
    Case(
        "token-malformed",
        build(),
        "the token is malformed",
        config=TRUST,
        env={"AUTHORIZATION": "a.b.c"},
    ),
    Case(
        "token-kid-integer",
        build(),
        "the token is malformed: Key ID header parameter must be a string",
        config=TRUST,
        token=lambda i: _with_header(i, {"kid": 7}),
    ),
    Case(
        "token-crit",
        build(),
        "the token is malformed",
        config=TRUST,
        token=lambda i: i.token(headers={"crit": ["exp"]}),
    ),
    Case(
        "token-claim-of-another-type",
        build(),
        "token rejected: claim 'repository' must be a string",
        config=TRUST,
        token=lambda i: i.token(repository=["org/app"]),
    ),
    Case(
        "token-ref-with-dotdot",
        build(),
        "token rejected: ref 'refs/tags/vx/../../heads/evil' is not a valid git ref",
        config=TRUST,
        token=lambda i: i.token(ref="refs/tags/vx/../../heads/evil"),
    ),
    # --- where images may go (issue 13) -------------------------------------------------------
    Case(
        "registry-with-credentials",
        build(),
        "'registry[0]': a registry name must not carry credentials (user:password@); remove them",
        config="registry: robot:planted-secret@registry.example/prod\n",
    ),
    Case(
        "signing-refs-loose",
        build(),
        "expected a full ref such as refs/heads/main or refs/tags/v*, without '..' or '//'",
        config="trust-loose-refs",
    ),
    Case(
        "pr-without-dev-registry",
        build(),
        "a presubmit build needs dev-registry in the config",
        config="registry: registry.example/prod\n",
        env={
            "GITHUB_EVENT_NAME": "pull_request_target",
            "GITHUB_EVENT_PATH": str(EVENTS / "pull_request_target.synchronize.json"),
        },
    ),
    Case(
        "dev-registry-is-release",
        build(),
        "dev-registry registry.example holds the release registry registry.example/prod",
        config="registry: registry.example/prod\ndev-registry: registry.example\n",
        env={
            "GITHUB_EVENT_NAME": "merge_group",
            "GITHUB_EVENT_PATH": str(EVENTS / "merge_group.checks_requested.json"),
        },
    ),
    Case(
        "max-manifest-entries-zero",
        build(),
        "'max-manifest-entries': expected a number of at least 1; got 0",
        config="max-manifest-entries: 0\n",
    ),
    Case(
        "token-alg-none",
        build(),
        "alg must be RS256",
        config=TRUST,
        token=lambda i: _unsigned(i.claims()),
    ),
    Case(
        "token-forged-key",
        build(),
        "the signature does not verify",
        config=TRUST,
        token=lambda i: i.token(key=_other_key()),
    ),
    Case(
        "token-wrong-audience",
        build(),
        "aud must be exactly 'image-builder'",
        config=TRUST,
        token=lambda i: i.token(aud="someone-else"),
    ),
    Case(
        "token-untrusted-issuer",
        build(),
        "is not trusted",
        config=TRUST,
        token=lambda i: i.token(iss="https://evil.example"),
    ),
    Case(
        "token-expired",
        build(),
        "it expired at",
        config=TRUST,
        token=lambda i: i.token(exp=1, iat=0, nbf=0),
    ),
    Case(
        "token-other-repository",
        build(),
        "the token is for repository org/app, but the CI context says Codertocat/Hello-World",
        config=TRUST,
        token=lambda i: i.token(sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
    ),
    Case(
        "token-jku",
        build(),
        "its header carries 'jku'",
        config=TRUST,
        token=lambda i: i.token(headers={"jku": "https://evil.example/jwks"}),
    ),
    # --- template injection -------------------------------------------------------------------
    Case(
        "env-secret",
        tag('{{ .Env "AZURE_CLIENT_SECRET" }}'),
        'reads .Env "AZURE_CLIENT_SECRET", which tag templates may not read',
        env={"AZURE_CLIENT_SECRET": "planted-secret"},
    ),
    Case(
        "printf",
        tag('{{ printf "%s" .Date }}'),
        "uses 'printf', which tag templates do not support",
    ),
    Case("call", tag("{{ call .X }}"), "uses 'call'"),
    Case("index", tag("{{ index . 0 }}"), "uses 'index'"),
    Case("python-format", tag("{0.__class__}"), "is not a valid OCI tag"),
    Case("jinja", tag("{{ config.items() }}"), "uses 'config.items()'"),
    Case("jinja-block", tag("{% for x in y %}"), "is not a valid OCI tag"),
    Case("unclosed", tag("v{{ .Date"), "has '{{' without a closing '}}'"),
    # --- tags and names -----------------------------------------------------------------------
    Case("tag-empty", tag("x="), "has an empty value"),
    Case("tag-129", tag("a" * 129), "is not a valid OCI tag"),
    Case("tag-leading-dot", tag(".hidden"), "is not a valid OCI tag"),
    Case("tag-leading-dash", build("--tag=-dash"), "is not a valid OCI tag"),
    Case("tag-colon", tag("a:b"), "is not a valid OCI tag"),
    Case("tag-at", tag("a@b"), "is not a valid OCI tag"),
    Case("tag-slash", tag("a/b"), "is not a valid OCI tag"),
    Case("tag-tab", tag("a\tb"), "is not a valid OCI tag"),
    Case("tag-nul", tag("a\x01b"), "is not a valid OCI tag"),
    Case("tag-fullwidth", tag("x=\uff56\uff11"), "is not a valid OCI tag"),
    Case("tag-lookalike", tag("x=l\u0430test"), "is not a valid OCI tag"),  # Cyrillic a
    Case("tag-signature", tag("sha256-" + "a" * 64 + ".sig"), "looks like a signature"),
    Case("tag-duplicate-name", build("--tag", "x=a b", "--tag", "x=c"), "two tags are named 'x'"),
    Case(
        "name-upper",
        ("build", "--name", "Team/App", "--context", "ctx", "--dry-run"),
        "image name 'Team/App' has upper-case letters; use lower case: --name team/app",
    ),
    Case(
        "name-dotdot",
        ("build", "--name", "team/../x", "--context", "ctx", "--dry-run"),
        "is not a valid OCI repository name",
    ),
    Case(
        "name-empty", ("build", "--name", "", "--context", "ctx", "--dry-run"), "--name is required"
    ),
    # --- validation regexes -------------------------------------------------------------------
    Case(
        "regex-invalid",
        build(),
        "expected a regular expression",
        config="default-commit-tag: {value: 'v{{ .ShortSHA }}', validation: '(['}\n",
    ),
    Case(
        "regex-unanchored",
        build(),
        "does not match its validation",
        config="default-commit-tag: {value: 'v{{ .ShortSHA }}-x', validation: 'v[0-9a-f]{8}'}\n",
    ),
    # --- paths --------------------------------------------------------------------------------
    Case(
        "context-missing",
        ("build", "--name", "x", "--context", "nope", "--dry-run"),
        "build context 'nope' does not exist",
    ),
    Case(
        "dockerfile-dotdot",
        build("--dockerfile", "../outside/Dockerfile"),
        "outside the build context",
    ),
    Case("dockerfile-symlink", build("--dockerfile", "link"), "outside the build context"),
    Case("envfile-dotdot", build("--env-file", "../../outside/envs"), "outside the build context"),
    Case("envfile-symlink", build("--env-file", "envlink"), "outside the build context"),
    # --- env files and payloads -----------------------------------------------------------------
    Case("envfile-garbage", build("--env-file", "bad.env"), "bad.env:2: expected KEY=value"),
    Case(
        "payload-truncated",
        build(),
        "is not valid JSON",
        env={"GITHUB_EVENT_PATH": "truncated.json"},
    ),
    Case(
        "payload-wrong-type",
        build(),
        "'number': expected a whole number; got 'two'",
        env={"GITHUB_EVENT_NAME": "pull_request", "GITHUB_EVENT_PATH": "wrongtype.json"},
    ),
    Case(
        "payload-null-head-commit",
        build(),
        "has head_commit: null",
        env={"GITHUB_EVENT_PATH": str(EVENTS / "push.deleted.json")},
    ),
    Case("payload-huge", build(), "is not valid JSON", env={"GITHUB_EVENT_PATH": "huge.json"}),
    Case(
        "unsupported-event",
        build(),
        "GitHub event 'issue_comment' is not supported",
        env={"GITHUB_EVENT_NAME": "issue_comment"},
    ),
    # --- config ---------------------------------------------------------------------------------
    Case(
        "config-wrong-type",
        build(),
        "'cache.enabled': expected true or false; got 'sometimes'",
        config="cache: {enabled: sometimes}\n",
    ),
    Case(
        "config-unknown-key",
        build(),
        "unknown key 'registy'; did you mean 'registry'?",
        config="registy: x\n",
    ),
    Case("config-list-for-string", build(), "'log-format'", config="log-format: [json]\n"),
    Case("platform-unknown", build("--platform", "linux/sparc"), "unknown platform 'linux/sparc'"),
]


def _unsigned(claims: dict[str, object]) -> str:
    import base64

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'kid': 'key-1'})}.{part(claims)}."


def _other_key() -> object:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def issuer() -> Iterator[FakeIssuer]:
    server = FakeIssuer().start()
    yield server
    server.stop()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "bad.env").write_text("GOOD=1\nthis is not a pair\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "Dockerfile").write_text("FROM scratch\n")
    (outside / "envs").write_text("SECRET=1\n")
    os.symlink(outside / "Dockerfile", ctx / "link")
    os.symlink(outside / "envs", ctx / "envlink")
    (tmp_path / "truncated.json").write_text((EVENTS / "push.new-branch.json").read_text()[:500])
    wrong = json.loads((EVENTS / "pull_request.opened.json").read_text())
    wrong["number"] = "two"
    (tmp_path / "wrongtype.json").write_text(json.dumps(wrong))
    (tmp_path / "huge.json").write_text("[" * 200_000)
    return tmp_path


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case: Case, cli: Cli, workspace: Path, issuer: FakeIssuer) -> None:
    env = {**PUSH, **case.env}
    if env["GITHUB_EVENT_PATH"] in ("truncated.json", "wrongtype.json", "huge.json"):
        env["GITHUB_EVENT_PATH"] = str(workspace / env["GITHUB_EVENT_PATH"])
    args = list(case.args)
    if case.config is not None:
        text = {
            TRUST: issuer.trust_yaml(),
            "trust-loose-refs": issuer.trust_yaml(**{"signing-refs": "['refs/tags/v*/../..']"}),
        }.get(case.config, case.config)
        (workspace / "config.yaml").write_text(text)
        args += ["--config", str(workspace / "config.yaml")]
    if case.token is not None:
        env["AUTHORIZATION"] = case.token(issuer)
    run = cli(*args, env=env, cwd=workspace)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    lines = [line for line in run.stderr.splitlines() if not line.startswith("::add-mask::")]
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert case.message in lines[0]
    assert "planted-secret" not in run.stderr
