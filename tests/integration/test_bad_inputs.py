"""The bad-input corpus as real processes: exit code 2, nothing on stdout, one line on stderr
that names the problem, no traceback, and no secret of the process's environment shown. One case
of each kind runs here (flag, config, path, template), and every token case that needs the
issuer's keys; tests/unit/test_bad_inputs.py runs the whole corpus in-process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cli
from tests.support.bad_inputs import (
    TRUST,
    Case,
    build,
    case_env,
    make_workspace,
    shown_lines,
    tag,
)
from tests.support.oidc import FakeIssuer

CASES = [
    # --- one of each kind -----------------------------------------------------------------------
    Case(
        "name-empty", ("build", "--name", "", "--context", "ctx", "--dry-run"), "--name is required"
    ),
    Case(
        "config-unknown-key",
        build(),
        "unknown key 'registy'; did you mean 'registry'?",
        config="registy: x\n",
    ),
    Case("dockerfile-symlink", build("--dockerfile", "link"), "outside the build context"),
    Case(
        "env-secret",
        tag('{{ .Env "AZURE_CLIENT_SECRET" }}'),
        'reads .Env "AZURE_CLIENT_SECRET", which tag templates may not read',
        env={"AZURE_CLIENT_SECRET": "planted-secret"},
    ),
    # --- tokens refused once the issuer's keys are fetched ---------------------------------------
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
]


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
    return make_workspace(tmp_path)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case: Case, cli: Cli, workspace: Path, issuer: FakeIssuer) -> None:
    env = case_env(case.env, workspace)
    args = list(case.args)
    if case.config is not None:
        text = issuer.trust_yaml() if case.config == TRUST else case.config
        (workspace / "config.yaml").write_text(text)
        args += ["--config", str(workspace / "config.yaml")]
    if case.token is not None:
        env["AUTHORIZATION"] = case.token(issuer)
    run = cli(*args, env=env, cwd=workspace)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stdout == ""
    lines = shown_lines(run.stderr)
    assert len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert case.message in lines[0]
    assert "planted-secret" not in run.stderr
