"""``image-builder build`` refusals happen before anything is built: exit 2, one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from image_builder.cli import main
from image_builder.embedded_registry import check_address
from image_builder.errors import InputError
from image_builder.plan import parse_build_args
from tests.conftest import EVENTS

PUSH = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_EVENT_NAME": "push",
    "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
}


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "app").mkdir(parents=True)
    (ctx / "app" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "outside" / "envs").write_text("A=1\n")
    os.symlink(tmp_path / "outside" / "Dockerfile", ctx / "linked.Dockerfile")
    monkeypatch.chdir(ctx)
    return ctx


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--context", "missing"],
            "build context 'missing' does not exist; pass an existing folder with --context",
        ),
        (
            ["--dockerfile", "nope/Dockerfile"],
            "Dockerfile 'nope/Dockerfile' does not exist in the build context",
        ),
        (
            ["--dockerfile", "../outside/Dockerfile"],
            "--dockerfile '../outside/Dockerfile' resolves to",
        ),
        (["--dockerfile", "linked.Dockerfile"], "outside the build context"),
        (
            ["--dockerfile", "app/Dockerfile", "--env-file", "../../outside/envs"],
            "--env-file '../../outside/envs' resolves to",
        ),
        (
            ["--dockerfile", "app/Dockerfile", "--platform", "linux/mips"],
            "unknown platform 'linux/mips'",
        ),
        (
            ["--dockerfile", "app/Dockerfile", "--name", "Bad/Name"],
            "image name 'Bad/Name' has upper-case letters; use lower case: --name bad/name",
        ),
        (["--dockerfile", "app/Dockerfile", "--tag", "bad tag!"], "which is not a valid OCI tag"),
        (
            ["--dockerfile", "app/Dockerfile", "--build-arg", "no spaces=1"],
            "--build-arg 'no spaces=1': expected KEY=value",
        ),
        (
            ["--context", "/etc", "--dockerfile", "passwd"],
            "build context '/etc' is an absolute path; pass it relative to the checkout",
        ),
        (["--context", ".."], "resolves to"),
        (["--context", ".."], "outside the checkout"),
        (
            ["--layout-out", "out", "--from-layout", "in"],
            "--layout-out builds only; it cannot be combined with --from-layout or --no-push",
        ),
    ],
)
def test_refused_before_building(
    argv: list[str], message: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "--name" not in argv:
        argv = [*argv, "--name", "team/app"]
    assert main(["build", *argv], env=PUSH) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_name_is_required(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build"], env=PUSH) == 2
    assert "the following arguments are required: --name" in capsys.readouterr().err


def test_dry_run_prints_the_plan(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["build", "--name", "team/app", "--dockerfile", "app/Dockerfile", "--dry-run",
         "--platform", "linux/arm64,linux/amd64", "--tag", "latest", "--export-tags"],
        env=PUSH,
    )  # fmt: skip
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["platforms"] == ["linux/arm64", "linux/amd64"]
    assert plan["references"][0] == "localhost:5000/team/app:latest"
    assert "TAG_latest" in plan["build_args"]
    assert plan["plain_http_hosts"] == ["localhost:5000"]
    assert plan["dockerfile"] == str(workspace / "app" / "Dockerfile")


def test_go_spelling_of_build(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["-name", "team/app", "-dockerfile", "app/Dockerfile", "-export-tags=true", "-dry-run=true", "-tag", "x"],
        env=PUSH,
    )  # fmt: skip
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["build_args"] == ["TAG_x", "TAG_default_tag"]


@pytest.mark.parametrize("address", ["0.0.0.0:5000", "10.1.2.3:5000", "example.com:5000"])
def test_embedded_registry_binds_only_loopback(address: str) -> None:
    with pytest.raises(InputError) as caught:
        check_address(address)
    assert caught.value.exit_code == 2
    assert f"--address {address!r} is not a loopback address" in str(caught.value)


def test_embedded_registry_address_form() -> None:
    assert check_address("127.0.0.1:5000") == "127.0.0.1:5000"
    assert check_address("[::1]:5000") == "[::1]:5000"
    with pytest.raises(InputError, match="expected host:port"):
        check_address("127.0.0.1")


TRUST = """trust:
  - issuer: https://token.actions.githubusercontent.com
    audience: image-builder
    job-workflow-refs: [org/builder/.github/workflows/image-builder.yml@refs/heads/main]
    repository-owners: [{name: org, id: 1}]
    events: [push]
"""


def test_bare_build_arg_is_refused_on_the_trusted_side(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attack: a caller names a variable of the trusted machine as a bare build argument."""
    (workspace / "config.yaml").write_text(TRUST)
    code = main(
        ["build", "--name", "team/app", "--dockerfile", "app/Dockerfile", "--config",
         "config.yaml", "--layout-out", "out", "--dry-run", "--build-arg", "COSIGN_PASSWORD"],
        env={**PUSH, "COSIGN_PASSWORD": "machine-secret-0c1d"},
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2
    assert "machine-secret-0c1d" not in captured.out + captured.err
    assert captured.err.strip().endswith(
        "--build-arg COSIGN_PASSWORD has no value; with a trust policy, build arguments never "
        "come from this machine's environment: pass COSIGN_PASSWORD=value"
    )


def test_bare_build_arg_takes_the_environment_locally(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["build", "--name", "team/app", "--dockerfile", "app/Dockerfile", "--dry-run",
         "--build-arg", "VERSION"],
        env={**PUSH, "VERSION": "1.2"},
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert json.loads(out)["build_args"] == ["VERSION"]
    assert "1.2" not in out  # the plan names build arguments, never their values
    assert parse_build_args(["VERSION"], {"VERSION": "1.2"}) == [("VERSION", "1.2")]


@pytest.mark.parametrize(
    ("flag", "variable"),
    [("--ado-pat", "AZURE_DEVOPS_EXT_PAT"), ("--azure-client-secret", "AZURE_CLIENT_SECRET")],
)
def test_flags_that_carry_secrets_warn_and_name_the_variable(
    workspace: Path, capsys: pytest.CaptureFixture[str], flag: str, variable: str
) -> None:
    code = main(["build", "--name", "team/app", "--dockerfile", "app/Dockerfile", "--dry-run",
                 "--backend", "local", flag, "s3cret-value"], env=PUSH)  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert (
        f"::warning::{flag} shows the secret to every process on this machine (ps); pass it in "
        f"the {variable} variable instead"
    ) in err.splitlines()
    assert err.count("s3cret-value") == 1  # only in the ::add-mask:: directive
    assert "::add-mask::s3cret-value" in err


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("folder", "--build-report-path {path} is a folder; give a file name"),
        ("missing/report.json", "--build-report-path {path}: the folder {parent} does not exist"),
    ],
)
def test_an_unusable_report_path_is_refused_before_any_work(
    tmp_path: Path, where: str, message: str
) -> None:
    from image_builder.commands.outputs import check_writable

    (tmp_path / "folder").mkdir()
    path = tmp_path / where
    with pytest.raises(InputError) as caught:
        check_writable(path, "--build-report-path")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(message.format(path=path, parent=path.parent))
    check_writable(tmp_path / "report.json", "--build-report-path")  # a usable one passes
    assert list(tmp_path.iterdir()) == [tmp_path / "folder"]  # and leaves no probe behind
