"""The Azure DevOps backend against a local fake of the ADO REST API, and the trusted pipeline's
own steps against the real registry."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.backends.ado import PARAMETER_NAMES
from tests.conftest import EVENTS, leaks
from tests.integration.conftest import REPO, Cli, secret
from tests.support.fake_ado import FakeAdo, Fault

PAT = secret("ado-pat-very-secret")
BASIC = "Basic " + base64.b64encode(f":{PAT}".encode()).decode()
TOKEN = secret("header.payload.signature-of-the-caller")
SHA = "abcdef0123456789abcdef0123456789abcdef01"


@pytest.fixture
def ado() -> Iterator[FakeAdo]:
    server = FakeAdo(BASIC).start()
    yield server
    server.stop()


def report_lines(status: str = "Succeeded") -> list[str]:
    report = {
        "version": 1, "status": status, "pushed": status == "Succeeded", "signed": False,
        "image_name": "team/app", "images_list": ["r.example/team/app:v1"] if status == "Succeeded" else [],
        "digest": "sha256:" + "a" * 64 if status == "Succeeded" else None, "tags": ["v1"],
        "repository_path": "r.example/", "architectures": ["amd64", "arm64"],
        "platforms": ["linux/amd64", "linux/arm64"], "failed_images": [], "error": None,
    }  # fmt: skip
    return [
        "building",
        "---IMAGE BUILD REPORT---",
        json.dumps(report),
        "---END OF IMAGE BUILD REPORT---",
        "bye",
    ]


def workspace(tmp_path: Path, ado: FakeAdo, **extra: str) -> tuple[Path, str]:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    config = tmp_path / "config.yaml"
    config.write_text(ado.config_yaml(**extra))
    return ctx, str(config)


def github(event: str, payload: str, **extra: str) -> dict[str, str]:
    return {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event,
        "GITHUB_EVENT_PATH": str(EVENTS / payload),
        "AZURE_DEVOPS_EXT_PAT": PAT,
        "AUTHORIZATION": TOKEN,
        **extra,
    }


COMMON = {"Name": "team/app", "Dockerfile": "Dockerfile", "Context": "ctx", "ExportTags": "true",
          "Platforms": "linux/amd64,linux/arm64",
          "Tags": base64.b64encode(b"latest,release=r-{{ .ShortSHA }}").decode()}  # fmt: skip


@pytest.mark.parametrize(
    ("event", "payload", "extra", "expected"),
    [
        ("push", "push.new-branch.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "postsubmit", "PullBaseSHA": "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "BaseRef": "refs/heads/master"}),
        ("pull_request_target", "pull_request_target.synchronize.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "presubmit", "PullNumber": "123", "PullBaseSHA": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "PullPullSHA": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d", "BaseRef": "refs/heads/master"}),
        ("pull_request", "pull_request.opened.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "presubmit", "PullNumber": "2", "PullBaseSHA": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "PullPullSHA": "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "BaseRef": "refs/heads/master"}),
        ("merge_group", "merge_group.checks_requested.json", {}, {"RepoName": "octo-repo", "RepoOwner": "octo-org", "JobType": "merge_group", "PullBaseSHA": "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d", "BaseRef": "refs/heads/main"}),
        ("workflow_dispatch", "workflow_dispatch.json", {"GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main"}, {"RepoName": "octo-repo", "RepoOwner": "octo-org", "JobType": "workflow_dispatch", "PullBaseSHA": SHA, "BaseRef": "refs/heads/main"}),
        ("schedule", "schedule.json", {"GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main"}, {"RepoName": "octo-repo", "RepoOwner": "octo-org", "JobType": "schedule", "PullBaseSHA": SHA, "BaseRef": "refs/heads/main"}),
    ],
)  # fmt: skip
def test_template_parameters_per_event(
    cli: Cli,
    ado: FakeAdo,
    tmp_path: Path,
    event: str,
    payload: str,
    extra: dict[str, str],
    expected: dict[str, str],
) -> None:
    ado.log_lines = report_lines()
    _, cfg = workspace(tmp_path, ado)
    outputs = tmp_path / "outputs"
    summary = tmp_path / "summary"
    run = cli(
        "build", "--name", "team/app", "--context", "ctx", "--config", cfg, "--export-tags",
        "--tag", "latest", "--tag", "release=r-{{ .ShortSHA }}",
        env={**github(event, payload, GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary), **extra), "PWD": str(tmp_path)},
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (created,) = ado.runs_created()
    # The token travels as a secret variable: template parameters can be read back from a run.
    assert created.json() == {
        "templateParameters": {**COMMON, **expected},
        "variables": {"AUTHORIZATION": {"value": TOKEN, "isSecret": True}},
    }
    assert created.headers["Authorization"] == BASIC
    assert set(created.json()["templateParameters"]) <= set(PARAMETER_NAMES)
    assert run.report["digest"] == "sha256:" + "a" * 64
    out = outputs.read_text()
    assert "adoResult<<" in out
    assert "\nsucceeded\n" in out
    assert '["r.example/team/app:v1"]' in out
    assert ado.web_link in summary.read_text()
    assert ado.web_link in run.stderr
    assert leaks(TOKEN, run.stdout, run.stderr, out) == []
    assert leaks(PAT, run.stdout, run.stderr, out) == []


def run_ado(cli: Cli, tmp_path: Path, cfg: str, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return cli(
        "build", "--name", "team/app", "--context", "ctx", "--config", cfg, *args,
        env=env or github("push", "push.new-branch.json"), cwd=tmp_path,
    )  # fmt: skip


def test_backend_is_chosen_by_ado_config_and_dry_run_shows_no_token(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg, "--dry-run")
    assert run.returncode == 0, run.stderr
    params = json.loads(run.stdout)
    assert "Authorization" not in params
    assert TOKEN not in run.stdout  # stderr holds it only in GitHub's ::add-mask:: directive
    assert params["Platforms"] == "linux/amd64,linux/arm64"
    assert ado.requests == []  # validated and printed; nothing was called


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AZURE_DEVOPS_EXT_PAT": ""}, "no Azure DevOps credentials: set AZURE_CLIENT_ID"),
        (
            {"AZURE_DEVOPS_EXT_PAT": "", "AZURE_CLIENT_ID": "x"},
            "the Azure service principal is incomplete: client secret, tenant id missing",
        ),
        ({"AUTHORIZATION": ""}, "the ADO backend needs the caller's OIDC token"),
    ],
)
def test_refusals_before_any_call(
    cli: Cli, ado: FakeAdo, tmp_path: Path, env: dict[str, str], message: str
) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg, env={**github("push", "push.new-branch.json"), **env})
    assert run.returncode == 2
    assert message in run.stderr
    assert ado.requests == []


def test_build_arg_with_a_comma_is_refused(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg, "--build-arg", "LIST=a,b")
    assert run.returncode == 2
    assert "--build-arg 'LIST=a,b' contains ','" in run.stderr


def test_wrong_credentials(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(
        cli,
        tmp_path,
        cfg,
        env={**github("push", "push.new-branch.json"), "AZURE_DEVOPS_EXT_PAT": "wrong"},
    )
    assert run.returncode == 2
    assert "Azure DevOps refused the credentials (HTTP 401)" in run.stderr
    assert len(ado.requests) == 1  # a 401 is never retried


def test_retries_on_429_and_5xx(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.log_lines = report_lines()
    ado.faults = [Fault(429, {"Retry-After": "1"}), Fault(503), Fault(502)]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    assert len(ado.runs_created()) == 4  # three faults, then the run was created once
    assert len({r.body for r in ado.runs_created()}) == 1


def test_retries_give_up(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.faults = [Fault(503)] * 10
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert "Azure DevOps did not answer" in run.stderr
    assert len(ado.requests) == 4  # ado-retry-strategy attempts


def test_failed_run_shows_its_report_and_exits_1(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.result = "failed"
    ado.log_lines = report_lines("Failed")
    outputs = tmp_path / "out"
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(
        cli, tmp_path, cfg, env=github("push", "push.new-branch.json", GITHUB_OUTPUT=str(outputs))
    )
    assert run.returncode == 1
    assert run.report["status"] == "Failed"
    assert f"::error::ADO run {FakeAdo.RUN} finished with result failed" in run.stderr
    assert "\nfailed\n" in outputs.read_text()


def test_canceled_run_without_report(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.result = "canceled"
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert "---IMAGE BUILD REPORT---" not in run.stdout
    assert "finished with result canceled" in run.stderr


def test_success_without_a_report(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert "succeeded but no build report between the marker lines in the logs" in run.stderr


def test_run_that_never_finishes(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.never_finishes = True
    _, cfg = workspace(tmp_path, ado, **{"ado-timeout": "1s"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert (
        f"the ADO run {FakeAdo.RUN} did not complete within 1s; it may still be running: {ado.web_link}"
        in run.stderr
    )


def test_preview_run(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    _, cfg = workspace(tmp_path, ado)
    pipeline = REPO / "pipelines" / "azure" / "oci-image-builder.yml"
    run = run_ado(
        cli, tmp_path, cfg, "--ado-preview-run", "--ado-preview-run-yaml-path", str(pipeline)
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == ado.final_yaml + "\n"
    (created,) = ado.runs_created()
    assert created.json()["previewRun"] is True
    assert created.json()["yamlOverride"] == pipeline.read_text()


def test_vso_variables_inside_azure_devops(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.log_lines = report_lines()
    _, cfg = workspace(tmp_path, ado)
    env = {
        "BUILD_BUILDID": "7", "TF_BUILD": "True", "REPO_OWNER": "org", "REPO_NAME": "app",
        "JOB_TYPE": "postsubmit", "PULL_BASE_SHA": SHA, "AZURE_DEVOPS_EXT_PAT": PAT, "AUTHORIZATION": TOKEN,
    }  # fmt: skip
    run = run_ado(cli, tmp_path, cfg, env=env)
    assert run.returncode == 0, run.stderr
    assert "##vso[task.setvariable variable=adoResult;isOutput=true]succeeded" in run.stdout
    assert f"##vso[task.setvariable variable=digest;isOutput=true]sha256:{'a' * 64}" in run.stdout
    (created,) = ado.runs_created()
    assert created.json()["templateParameters"]["RepoOwner"] == "org"
    assert created.json()["templateParameters"]["PullBaseSHA"] == SHA


def test_service_principal_failure_names_no_secret(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    """azure-identity is used for a service principal; an authority it cannot reach is a clear
    error before any ADO call, and the client secret appears nowhere."""
    from tests.integration.conftest import free_port

    client_secret = secret("planted-azure-client-secret-77a1")
    _, cfg = workspace(tmp_path, ado)
    env = {
        **github("push", "push.new-branch.json"),
        "AZURE_DEVOPS_EXT_PAT": "",
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_CLIENT_SECRET": client_secret,
        "AZURE_TENANT_ID": "00000000-0000-0000-0000-000000000002",
        "AZURE_AUTHORITY_HOST": f"https://127.0.0.1:{free_port()}",
    }
    run = run_ado(cli, tmp_path, cfg, env=env)
    assert run.returncode == 2
    assert (
        "::error::the Azure service principal could not get a token for Azure DevOps: "
        in run.stderr
    )
    assert ado.requests == []
    assert leaks(client_secret, run.stdout, run.stderr) == []
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 3  # masks and the one error line


def test_service_principal_token_through_azure_identity(cli: Cli, tmp_path: Path) -> None:
    """azure-identity gets a token for the Azure DevOps resource from (a local fake of) Azure AD;
    the client then calls ADO with it as a Bearer token."""
    from tests.support.fake_aad import FakeAad
    from tests.support.pki import CA

    ca = CA()
    client_secret = secret("planted-sp-secret-5b7c")
    access = secret("aad-access-token-for-ado")
    aad = FakeAad(
        ca, tmp_path, client_id="sp-client", client_secret=client_secret, access_token=access
    ).start()
    server = FakeAdo(f"Bearer {access}").start()
    try:
        server.log_lines = report_lines()
        _, cfg = workspace(tmp_path, server)
        env = {
            **github("push", "push.new-branch.json"),
            "AZURE_DEVOPS_EXT_PAT": "",
            "AZURE_CLIENT_ID": "sp-client",
            "AZURE_CLIENT_SECRET": client_secret,
            "AZURE_TENANT_ID": "my-tenant",
            "AZURE_AUTHORITY_HOST": aad.url,
            "REQUESTS_CA_BUNDLE": str(ca.write(tmp_path)),
        }
        run = run_ado(cli, tmp_path, cfg, env=env)
        assert run.returncode == 0, run.stderr
        (grant,) = aad.grants
        assert grant["grant_type"] == ["client_credentials"]
        assert grant["scope"] == ["499b84ac-1321-427f-aa17-267ca6975798/.default"]
        assert server.runs_created()[0].headers["Authorization"] == f"Bearer {access}"
        assert leaks(client_secret, run.stdout, run.stderr) == []
        assert leaks(access, run.stdout, run.stderr) == []
    finally:
        server.stop()
        aad.stop()
