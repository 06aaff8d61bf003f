"""The bad-input corpus, in-process: every case that needs no process and no network is refused
by ``main(argv, env)`` with exit code 2 and one line on stderr that names the problem, before
anything is built, and never with a traceback. (tests/integration/test_bad_inputs.py runs a few
of them, and those that need the issuer's keys, as real processes.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from image_builder.cli import main
from tests.conftest import EVENTS
from tests.support.bad_inputs import (
    TRUST,
    Case,
    build,
    case_env,
    make_workspace,
    shown_lines,
    tag,
)
from tests.support.oidc import TokenMinter

CASES = [
    # --- tokens (trust), refused before any key is fetched --------------------------------------
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
        token=lambda m: m.with_header({"kid": 7}),
    ),
    Case(
        "token-crit",
        build(),
        "the token is malformed",
        config=TRUST,
        token=lambda m: m.token(headers={"crit": ["exp"]}),
    ),
    Case("token-alg-none", build(), "alg must be RS256", config=TRUST, token=TokenMinter.unsigned),
    Case(
        "token-untrusted-issuer",
        build(),
        "is not trusted",
        config=TRUST,
        token=lambda m: m.token(iss="https://evil.example"),
    ),
    Case(
        "token-jku",
        build(),
        "its header carries 'jku'",
        config=TRUST,
        token=lambda m: m.token(headers={"jku": "https://evil.example/jwks"}),
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


@pytest.fixture(scope="module")
def minter() -> TokenMinter:
    return TokenMinter()  # never asked: every token case here is refused before a key fetch


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    make_workspace(tmp_path)
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(
    case: Case, workspace: Path, minter: TokenMinter, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {**case_env(case.env, workspace), "HOME": str(workspace / "home")}
    args = list(case.args)
    if case.config is not None:
        text = {
            TRUST: minter.trust_yaml(),
            "trust-loose-refs": minter.trust_yaml(**{"signing-refs": "['refs/tags/v*/../..']"}),
        }.get(case.config, case.config)
        (workspace / "config.yaml").write_text(text)
        args += ["--config", str(workspace / "config.yaml")]
    if case.token is not None:
        env["AUTHORIZATION"] = case.token(minter)
    code = main(args, env=env)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == ""
    lines = shown_lines(err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert case.message in lines[0]
    assert "planted-secret" not in err
