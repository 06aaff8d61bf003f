"""The Azure DevOps backend against a local fake of the ADO REST API, and the trusted pipeline's
own steps against the real registry."""

from __future__ import annotations

import base64
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from image_builder.backends.ado import PARAMETER_NAMES
from tests.conftest import EVENTS, leaks
from tests.integration.conftest import (
    CALLER_TOKEN,
    REPO,
    Cli,
    Started,
    secret,
    service_principal,
)
from tests.integration.conftest import Run as RunType
from tests.support.fake_ado import FakeAdo, Fault
from tests.support.pki import CA

PAT = secret("ado-pat-very-secret")
BASIC = "Basic " + base64.b64encode(f":{PAT}".encode()).decode()
TOKEN = CALLER_TOKEN
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
        "repository_path": "r.example/", "architectures": ["linux/amd64", "linux/arm64"],
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
          "Tags": base64.b64encode(b"latest=latest,release=r-{{ .ShortSHA }}").decode()}  # fmt: skip


@pytest.mark.parametrize(
    ("event", "payload", "extra", "expected"),
    [
        ("push", "push.new-branch.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "postsubmit", "PullBaseSHA": "6113728f27ae82c7b1a177c8d03f9e96e0adf246"}),
        ("pull_request_target", "pull_request_target.synchronize.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "presubmit", "PullNumber": "123", "PullBaseSHA": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "PullPullSHA": "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"}),
        ("pull_request", "pull_request.opened.json", {}, {"RepoName": "Hello-World", "RepoOwner": "Codertocat", "JobType": "presubmit", "PullNumber": "2", "PullBaseSHA": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e", "PullPullSHA": "ec26c3e57ca3a959ca5aad62de7213c562f8c821"}),
        ("merge_group", "merge_group.checks_requested.json", {}, {"RepoName": "octo-repo", "RepoOwner": "octo-org", "JobType": "merge_group", "PullNumber": "0", "PullBaseSHA": "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d", "PullPullSHA": "2ffea6db159f6b6c47a24e778fb9ef40cf6b1c7d", "BaseRef": "refs/heads/gh-readonly-queue/main/pr-104-929f8209d40f77f4abc622a499c93a83babdbe64"}),
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


def start_ado(
    cli: Cli, tmp_path: Path, cfg: str, *args: str, env: dict[str, str] | None = None
) -> Started:
    """The client in the background, for tests that act while it runs."""
    return cli.start(
        "build", "--name", "team/app", "--context", "ctx", "--config", cfg, *args,
        env=env or github("push", "push.new-branch.json"), cwd=tmp_path,
    )  # fmt: skip


def run_ado(
    cli: Cli, tmp_path: Path, cfg: str, *args: str, env: dict[str, str] | None = None
) -> RunType:
    return start_ado(cli, tmp_path, cfg, *args, env=env).finish(600)


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


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (401, "Azure DevOps refused the credentials (HTTP 401); check the personal access token"),
        (203, "Azure DevOps answered with a sign-in page instead of JSON (HTTP 203): the personal access token is wrong or expired"),
        (200, "Azure DevOps answered with a sign-in page instead of JSON (HTTP 200): the personal access token is wrong or expired"),
    ],
)  # fmt: skip
def test_wrong_credentials(
    cli: Cli, ado: FakeAdo, tmp_path: Path, status: int, message: str
) -> None:
    """A bad PAT gets 401 from some endpoints and the HTML sign-in page, with 203, from others:
    both are bad input with a fix, never "internal error"."""
    ado.bad_auth_status = status
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(
        cli,
        tmp_path,
        cfg,
        env={**github("push", "push.new-branch.json"), "AZURE_DEVOPS_EXT_PAT": "not-the-pat-1f2e"},
    )
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert len(ado.requests) == 1  # a PAT cannot be renewed, so it is not asked again
    assert ado.runs == {}


def test_a_lost_answer_never_starts_a_second_run(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    """Azure DevOps accepted the run, then the answer was a 504: asking again would build, push
    and sign twice. The client says where to look instead."""
    ado.faults = [Fault(504, after=True, method="POST")]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert len(ado.runs) == 1
    assert len(ado.runs_created()) == 1
    assert (
        "Azure DevOps answered HTTP 504 to POST _apis/pipelines/17/runs: fault after the request "
        f"took effect; Azure DevOps may have started the run anyway: look for it at "
        f"{ado.url}/project/_build?definitionId=17 before triggering another"
    ) in run.stderr


@pytest.mark.parametrize("status", [502, 503])
def test_a_post_that_may_have_arrived_is_not_sent_again(
    cli: Cli, ado: FakeAdo, tmp_path: Path, status: int
) -> None:
    """502 and 503 come from gateways that may have passed the request on: not retried either."""
    ado.faults = [Fault(status, method="POST")]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert len(ado.runs_created()) == 1
    assert "may have started the run anyway" in run.stderr


@pytest.mark.parametrize(
    "fault",
    [
        Fault(502, body="<html><body>502 Bad Gateway</body></html>", method="POST"),
        Fault(200, body={"state": "inProgress"}, after=True, method="POST"),
    ],
    ids=["html-502", "200-without-id"],
)
def test_an_answer_that_says_nothing_clear_names_the_run_list(
    cli: Cli, ado: FakeAdo, tmp_path: Path, fault: Fault
) -> None:
    """A gateway's HTML error page is not a sign-in page, and a 200 without a run id still
    means the run was probably made: neither is bad credentials, both say where to look."""
    ado.faults = [fault]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1, run.stderr
    assert len(ado.runs_created()) == 1
    assert f"look for it at {ado.url}/project/_build?definitionId=17" in run.stderr
    assert "sign-in page" not in run.stderr


def test_ctrl_c_while_waiting_to_trigger_sends_nothing(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    """Waits end when the user stops: a POST turned away with 429 and Retry-After is not sent
    again after Ctrl-C, so no run starts that nobody follows."""
    ado.faults = [Fault(429, {"Retry-After": "3600"}, method="POST")]
    _, cfg = workspace(tmp_path, ado)
    started = start_ado(cli, tmp_path, cfg)
    started.wait_for("answered HTTP 429; trying again", timeout=60)
    started.process.send_signal(signal.SIGINT)
    run = started.finish(60)  # long before the hour Retry-After asks for
    assert run.returncode == 130
    assert len(ado.runs_created()) == 1
    assert ado.runs == {}
    assert "POST _apis/pipelines/17/runs was not sent: image-builder is stopping" in run.stderr


def test_a_macro_in_a_parameter_is_refused_before_any_call(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg, "--build-arg", "V=$(System.AccessToken)")
    assert run.returncode == 2
    assert (
        "--build-arg 'V=$(System.AccessToken)' contains '$(', which Azure DevOps would expand"
        in run.stderr
    )
    assert ado.requests == []


def test_429_before_acceptance_is_retried_and_one_run_starts(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    ado.log_lines = report_lines()
    ado.faults = [Fault(429, {"Retry-After": "0"}, method="POST")] * 2 + [Fault(503, method="GET")]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    assert len(ado.runs_created()) == 3  # two 429s, then accepted
    assert len(ado.runs) == 1
    assert len({r.body for r in ado.runs_created()}) == 1


def test_a_refused_connection_is_retried(cli: Cli, tmp_path: Path) -> None:
    """Connection refused: the request never reached Azure DevOps, so it is safe to send again.
    Azure DevOps comes up while the client retries."""
    from tests.integration.conftest import free_port

    port = free_port()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\n")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"ado-config:\n  ado-organization-url: http://127.0.0.1:{port}/{FakeAdo.ORG}\n"
        f"  ado-project-name: {FakeAdo.PROJECT}\n  ado-pipeline-id: {FakeAdo.PIPELINE}\n"
        "  ado-refresh-interval: 50ms\n  ado-retry-strategy: {attempts: 30, delay: 100ms}\n"
    )
    started = start_ado(cli, tmp_path, str(cfg))
    started.wait_for("Connection refused; trying again", timeout=60)  # nothing listens yet
    server = FakeAdo(BASIC, port=port)
    server.log_lines = report_lines()
    server.start()
    try:
        run = started.finish(60)
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr
    assert "Azure DevOps: POST _apis/pipelines/17/runs: " in run.stderr
    assert len(server.runs) == 1


def test_gets_are_retried_and_give_up(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.faults = [Fault(503, method="GET")] * 10
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert (
        "Azure DevOps did not answer: GET _apis/build/builds/4242 answered HTTP 503 (gave up after "
        f"retries); ADO run 4242 was asked to cancel: {ado.web_link}"
    ) in run.stderr
    assert len(ado.of("PATCH", "builds/4242$")) == 1  # nobody would see what it does
    assert len(ado.of("GET", "builds/4242$")) == 4  # ado-retry-strategy attempts


def test_pipeline_version_goes_in_the_query(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    """Runs - Run Pipeline takes ``pipelineVersion`` as a query parameter; the 7.1 body has no
    ``pipeline`` member (the fake refuses unknown members, as the schema does)."""
    ado.log_lines = report_lines()
    _, cfg = workspace(tmp_path, ado, **{"ado-pipeline-version": "2"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    (created,) = ado.runs_created()
    assert created.query["pipelineVersion"] == ["2"]
    assert set(created.json()) == {"templateParameters", "variables"}
    assert ado.runs[FakeAdo.RUN].version == 2


def test_a_pipeline_version_that_does_not_exist(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    _, cfg = workspace(tmp_path, ado, **{"ado-pipeline-version": "9"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert (
        "Azure DevOps answered HTTP 404 to POST _apis/pipelines/17/runs: pipeline version 9 not found"
        in run.stderr
    )
    assert ado.runs == {}


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


def test_a_run_over_its_time_is_cancelled(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    """Giving up used to leave the run going, and it still pushed: now it is cancelled."""
    ado.never_finishes = True
    outputs = tmp_path / "out"
    _, cfg = workspace(tmp_path, ado, **{"ado-timeout": "1s"})
    run = run_ado(
        cli, tmp_path, cfg, env=github("push", "push.new-branch.json", GITHUB_OUTPUT=str(outputs))
    )
    assert run.returncode == 1
    (cancel,) = ado.of("PATCH", r"/build/builds/4242$")
    assert cancel.json() == {"status": "cancelling"}
    assert ado.runs[FakeAdo.RUN].result == "canceled"
    assert "cancelling ADO run 4242: it did not finish within ado-timeout (1s)" in run.stderr
    assert (
        f"ADO run 4242 was cancelled (it did not finish within ado-timeout (1s)): {ado.web_link}"
        in run.stderr
    )
    assert "\ncanceled\n" in outputs.read_text()


def test_queue_time_has_its_own_limit(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    """Waiting for an agent is not run time: a run that never leaves the queue is cancelled at
    ado-queue-timeout, with its place in the queue shown while it waits."""
    ado.queue_ticks = 10_000
    _, cfg = workspace(tmp_path, ado, **{"ado-queue-timeout": "500ms", "ado-timeout": "1h"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert "ADO run 4242: waiting for an agent at position" in run.stderr
    assert "cancelling ADO run 4242: it did not start within ado-queue-timeout (0.5s)" in run.stderr
    assert len(ado.of("PATCH", r"/build/builds/4242$")) == 1


def test_queue_time_does_not_count_as_run_time(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.log_lines = report_lines()
    ado.queue_ticks = 30  # 30 polls at 50ms: longer in the queue than ado-timeout
    _, cfg = workspace(tmp_path, ado, **{"ado-timeout": "1s"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    assert ado.of("PATCH", "builds") == []


def test_a_cancelled_run_that_does_not_stop(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    ado.never_finishes = True
    ado.cancel_ticks = 10_000
    _, cfg = workspace(tmp_path, ado, **{"ado-timeout": "300ms", "ado-cancel-timeout": "300ms"})
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 1
    assert (
        "asked Azure DevOps to cancel ADO run 4242 (it did not finish within ado-timeout (0.3s)), "
        f"but it had not stopped when image-builder gave up waiting; see {ado.web_link}"
    ) in run.stderr


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


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("unreachable", 1, "::error::the Azure service principal could not get a token for Azure DevOps: Authentication failed: "),
        ("bad tenant", 2, "::error::the Azure service principal settings are not valid: Invalid tenant ID provided."),
        ("http authority", 2, "::error::the Azure service principal settings are not valid: 'http://127.0.0.1:9' is an invalid authority."),
    ],
)  # fmt: skip
def test_service_principal_failure_names_no_secret(
    cli: Cli, ado: FakeAdo, tmp_path: Path, case: str, code: int, message: str
) -> None:
    """A service principal that cannot get a token fails before any ADO call, and the client
    secret appears nowhere. Entra ID out of reach is a runtime failure (1); settings that can
    never work are bad input (2)."""
    from tests.integration.conftest import free_port

    client_secret = secret("planted-azure-client-secret-77a1")
    _, cfg = workspace(tmp_path, ado)
    env = {
        **github("push", "push.new-branch.json"),
        "AZURE_DEVOPS_EXT_PAT": "",
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        "AZURE_CLIENT_SECRET": client_secret,
        "AZURE_TENANT_ID": "bad tenant!" if case == "bad tenant" else "00000000-0000-0000-0000-000000000002",
        "AZURE_AUTHORITY_HOST": "http://127.0.0.1:9" if case == "http authority" else f"https://127.0.0.1:{free_port()}",
    }  # fmt: skip
    run = run_ado(cli, tmp_path, cfg, env=env)
    assert run.returncode == code, run.stderr
    assert message in run.stderr
    assert ado.requests == []
    assert leaks(client_secret, run.stdout, run.stderr) == []
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) <= 3  # masks and the one error line


def test_a_principal_entra_refuses_is_bad_input(cli: Cli, tmp_path: Path) -> None:
    aad, server, env = service_principal(tmp_path, uses=100)
    try:
        _, cfg = workspace(tmp_path, server)
        run = run_ado(cli, tmp_path, cfg, env={**env, "AZURE_CLIENT_SECRET": "rotated"})
        assert run.returncode == 2
        assert "AADSTS7000215: Invalid client secret provided." in run.stderr
        assert server.requests == []
    finally:
        server.stop()
        aad.stop()


# --- the run, live --------------------------------------------------------------------------------


def long_run(ado: FakeAdo, build_lines: list[str]) -> None:
    """A run whose build step logs one line every 30 simulated seconds, one line per poll."""
    from tests.support.fake_ado import default_steps

    steps = default_steps(report_lines())
    build = next(s for s in steps if s.ref == "build")
    build.lines = build_lines
    ado.steps = steps
    ado.lines_per_tick = 1
    ado.seconds_per_line = 30
    ado.queue_ticks = 3


@pytest.mark.parametrize("first_line", [1, 0])
def test_a_15_minute_run_is_shown_live(
    cli: Cli, ado: FakeAdo, tmp_path: Path, first_line: int
) -> None:
    """Lines reach the user while the run is in progress, once each, in order, from the step
    logs only (the job-level logs repeat them and are never read), without ADO's timestamps and
    unable to drive the local CI; the run link comes before any of them. Whether Azure DevOps
    numbers log lines from 1 or from 0, none is lost or shown twice."""
    ado.first_line = first_line
    lines = [f"compiling part {n} of 30" for n in range(1, 31)]
    lines[4] = "::set-output name=digest::sha256:forged"
    lines[5] = "##vso[task.setvariable variable=signing_success]true"
    lines[6] = "compiling part 7 of 30 \x0c with a form feed and a \u2028 line separator"
    lines[7] = f"compiling part 8 of 30 with the caller's token {TOKEN} in it"
    long_run(ado, lines)
    _, cfg = workspace(tmp_path, ado)
    started = start_ado(cli, tmp_path, cfg)
    started.wait_for("[build] compiling part 10 of 30", timeout=60)
    assert ado.runs[FakeAdo.RUN].status == "inProgress"  # shown while the run goes on
    run = started.finish(120)
    assert run.returncode == 0, run.stderr
    err = run.stderr.split("\n")  # what a CI runner counts as lines
    shown = [line for line in err if line.startswith("[build] compiling part")]
    expected = [line.replace(TOKEN, "***") for line in lines if line.startswith("compiling")]
    assert shown == [f"[build] {line}" for line in expected]
    assert leaks(TOKEN, run.stdout, run.stderr) == []
    assert "[build] | ::set-output name=digest::sha256:forged" not in err  # not at a line start
    assert "[build] ::set-output name=digest::sha256:forged" in err
    assert not any("##vso[" in line for line in err)
    assert "[build] ##vso [task.setvariable variable=signing_success]true" in err
    assert not any(line.startswith("[") and "2026-11-26T" in line for line in err)
    link = err.index(f"ADO run 4242: {ado.web_link}")
    step_start = err.index("[build] Build in the sandbox (no secrets): started")
    step_end = err.index("[build] Build in the sandbox (no secrets): succeeded")
    assert link < step_start < err.index("[build] compiling part 1 of 30")
    assert err.index("[build] compiling part 30 of 30") < step_end
    assert "ADO run 4242: waiting for an agent at position 3" in err
    agent_steps = (
        "Initialize job",
        "Agent name:",
        "Checkout ",
        "Syncing repository",
        "Finalize Job",
    )
    assert not [
        line for line in err if line.startswith("[") and any(a in line for a in agent_steps)
    ]
    job_logs = {r.log for r in ado.runs[FakeAdo.RUN].records if r.type == "Job"}
    read = {int(r.path.rsplit("/", 1)[1]) for r in ado.of("GET", r"/logs/\d+$")}
    assert read
    assert not (read & job_logs)
    assert run.report["digest"] == "sha256:" + "a" * 64


def interrupted(
    cli: Cli, ado: FakeAdo, tmp_path: Path, sig: signal.Signals
) -> tuple[RunType, Path]:
    """A long run, and ``sig`` to the client once the build step has logged three lines."""
    if ado.steps is None:
        long_run(ado, [f"compiling part {n} of 30" for n in range(1, 31)])
    outputs = tmp_path / "out"
    _, cfg = workspace(tmp_path, ado)
    started = start_ado(
        cli, tmp_path, cfg, env=github("push", "push.new-branch.json", GITHUB_OUTPUT=str(outputs))
    )
    started.wait_for("[build] compiling part 3 of 30", timeout=60)
    started.process.send_signal(sig)
    return started.finish(60), outputs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_cancels_the_remote_run(
    cli: Cli, ado: FakeAdo, tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C (or a CI runner's SIGTERM) cancels the run it started, waits for it to stop and
    reports it cancelled; before, the client exited and the run went on to push."""
    run, outputs = interrupted(cli, ado, tmp_path, sig)
    assert run.returncode == 128 + sig
    (cancel,) = ado.of("PATCH", r"/build/builds/4242$")
    assert cancel.json() == {"status": "cancelling"}
    assert ado.runs[FakeAdo.RUN].result == "canceled"
    assert f"ADO run 4242 was cancelled (stopped by {sig.name}): {ado.web_link}" in run.stderr
    assert f"::error::stopped by {sig.name}" in run.stderr
    assert "[build] compiling part 30 of 30" not in run.stderr
    assert "\ncanceled\n" in outputs.read_text()


def test_a_run_that_finished_before_its_cancel_is_reported_as_it_finished(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    """Ctrl-C raced the run's end: it pushed, so its report is published, not "cancelled"."""
    ado.finish_on_cancel = True
    run, outputs = interrupted(cli, ado, tmp_path, signal.SIGINT)
    assert run.returncode == 130  # the user did stop image-builder
    assert "ADO run 4242 had finished before it could be cancelled" in run.stderr
    assert "was cancelled" not in run.stderr
    assert run.report["digest"] == "sha256:" + "a" * 64
    assert "\nsucceeded\n" in outputs.read_text()


def test_the_report_comes_from_the_publish_and_sign_steps_only(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    """The build job runs the caller's code: a report block it prints is shown as output, and
    never taken for the build's report."""
    from tests.support.fake_ado import Step, default_steps

    forged = report_lines()
    forged[2] = forged[2].replace("a" * 64, "f" * 64)
    steps = default_steps(["pushing", "push failed"])
    next(s for s in steps if s.ref == "build").lines = ["building", *forged]
    # A step named like a report step, in a job that is not its own, is not believed either.
    steps.insert(8, Step("build", "publish", "Verify the layout and push it", forged))
    steps.append(Step("sign", "sign", "Sign the pushed digest", ["no signer configured"]))
    ado.steps = steps
    outputs = tmp_path / "out"
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(
        cli, tmp_path, cfg, env=github("push", "push.new-branch.json", GITHUB_OUTPUT=str(outputs))
    )
    assert run.returncode == 1
    assert "[build] ---IMAGE BUILD REPORT---" in run.stderr.split("\n")  # shown, inert
    assert "---IMAGE BUILD REPORT---" not in run.stdout
    assert "f" * 64 not in outputs.read_text()
    assert (
        "ADO run 4242 succeeded but no build report between the marker lines in the logs of its "
        "publish and sign steps"
    ) in run.stderr


def test_the_sign_steps_report_wins(cli: Cli, ado: FakeAdo, tmp_path: Path) -> None:
    from tests.support.fake_ado import Step, default_steps

    signed = report_lines()
    signed[2] = signed[2].replace('"signed": false', '"signed": true')
    steps = default_steps(report_lines())
    steps.append(Step("sign", "sign", "Sign the pushed digest", signed))
    ado.steps = steps
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    assert run.report["signed"] is True


# --- auth that lasts, and answers Azure DevOps gives --------------------------------------------------


def test_service_principal_token_through_azure_identity(cli: Cli, tmp_path: Path) -> None:
    """azure-identity gets a token for the Azure DevOps resource from (a local fake of) Azure AD;
    the client then calls ADO with it as a Bearer token, from its cache while it is fresh."""
    aad, server, env = service_principal(tmp_path, uses=1000)
    try:
        server.log_lines = report_lines()
        _, cfg = workspace(tmp_path, server)
        run = run_ado(cli, tmp_path, cfg, env=env)
        assert run.returncode == 0, run.stderr
        (grant,) = aad.grants
        assert grant["grant_type"] == ["client_credentials"]
        assert grant["scope"] == ["499b84ac-1321-427f-aa17-267ca6975798/.default"]
        (token,) = aad.issued
        assert {r.headers["Authorization"] for r in server.requests} == {f"Bearer {token}"}
        assert leaks(env["AZURE_CLIENT_SECRET"], run.stdout, run.stderr) == []
        assert leaks(token, run.stdout, run.stderr) == []
    finally:
        server.stop()
        aad.stop()


def test_an_expired_token_is_renewed_mid_run(cli: Cli, tmp_path: Path) -> None:
    """Entra tokens expire (Azure DevOps here accepts each for 60 requests, while azure-identity
    still holds it as fresh); the long run goes on with a new one, where the token fetched once
    used to end in a 401 reported as bad input."""
    aad, server, env = service_principal(tmp_path, uses=60)
    try:
        long_run(server, [f"compiling part {n} of 30" for n in range(1, 31)])
        _, cfg = workspace(tmp_path, server)
        run = run_ado(cli, tmp_path, cfg, env=env)
        assert run.returncode == 0, run.stderr
        assert len(aad.grants) >= 2
        used = {r.headers["Authorization"] for r in server.requests}
        assert len(used) >= 2
        for token in aad.issued:
            assert token not in run.stderr + run.stdout
    finally:
        server.stop()
        aad.stop()


def test_a_principal_refused_mid_run_is_exit_1_with_the_cause(cli: Cli, tmp_path: Path) -> None:
    aad, server, env = service_principal(tmp_path, uses=60)
    aad.refuse_after = 1
    try:
        long_run(server, [f"compiling part {n} of 30" for n in range(1, 31)])
        _, cfg = workspace(tmp_path, server)
        run = run_ado(cli, tmp_path, cfg, env=env)
        assert run.returncode == 1
        assert (
            "the Azure service principal could not get a token for Azure DevOps: Authentication "
            "failed: AADSTS7000215: Invalid client secret provided."
        ) in run.stderr
        # The first token; the renewal refused mid-run; the cancel's own try, refused too.
        assert len(aad.grants) == 3
        assert f"ADO run 4242 may still be running: {server.web_link}" in run.stderr
        assert "Traceback" not in run.stderr
    finally:
        server.stop()
        aad.stop()


def test_retry_after_on_a_200_slows_the_next_request(
    cli: Cli, ado: FakeAdo, tmp_path: Path
) -> None:
    """Azure DevOps' delayed mode: a 200 with Retry-After asks for a pause before the next call."""
    ado.log_lines = report_lines()
    ado.faults = [Fault(None, {"Retry-After": "1"}, after=True, method="GET")]
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(cli, tmp_path, cfg)
    assert run.returncode == 0, run.stderr
    first_get = next(i for i, r in enumerate(ado.requests) if r.method == "GET")
    pause = ado.requests[first_get + 1].at - ado.requests[first_get].at
    assert pause >= 0.95


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("ALL_PROXY", "socks5://127.0.0.1:1080", "SOCKS proxies are not supported"),
        ("HTTPS_PROXY", "ftp://proxy.example", "Unknown scheme for proxy URL URL('ftp://proxy.example')"),
    ],
)  # fmt: skip
def test_a_proxy_that_cannot_be_used_is_refused_before_any_call(
    cli: Cli, ado: FakeAdo, tmp_path: Path, variable: str, value: str, why: str
) -> None:
    _, cfg = workspace(tmp_path, ado)
    run = run_ado(
        cli, tmp_path, cfg, env={**github("push", "push.new-branch.json"), variable: value}
    )
    assert run.returncode == 2
    assert (
        "cannot use the proxy from the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY): "
        f"{why}; give an http:// or https:// proxy URL"
    ) in run.stderr
    assert "Traceback" not in run.stderr
    assert ado.requests == []


def test_https_proxy_from_the_environment(cli: Cli, tmp_path: Path) -> None:
    """Self-hosted runners reach Azure DevOps through HTTPS_PROXY."""
    from tests.support.connect_proxy import ConnectProxy
    from tests.support.fake_server import tls_context

    ca = CA()
    cert, key = ca.pair("127.0.0.1", server=True)
    (tmp_path / "ado.pem").write_bytes(cert)
    (tmp_path / "ado.key").write_bytes(key)
    server = FakeAdo(BASIC, tls=tls_context(tmp_path / "ado.pem", tmp_path / "ado.key")).start()
    proxy = ConnectProxy().start()
    try:
        server.log_lines = report_lines()
        _, cfg = workspace(tmp_path, server)
        env = {
            **github("push", "push.new-branch.json"),
            "HTTPS_PROXY": proxy.url,
            "SSL_CERT_FILE": str(ca.write(tmp_path)),
        }
        run = run_ado(cli, tmp_path, cfg, env=env)
        assert run.returncode == 0, run.stderr
        assert proxy.tunnels
        assert set(proxy.tunnels) == {server.address}
        assert len(server.runs) == 1
    finally:
        proxy.stop()
        server.stop()
