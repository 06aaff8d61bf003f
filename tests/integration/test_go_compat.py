"""Drop-in for kyma users: the Go action's and the Go workflow's exact command lines, unchanged,
against our CLI and (a local fake of) Azure DevOps with a service principal from (a local fake
of) Entra ID."""

from __future__ import annotations

import base64
import json
import shlex
from pathlib import Path

import pytest

from tests.conftest import leaks
from tests.integration.conftest import Cli, secret, service_principal

# The Go action's `args` (kyma-project/test-infra .github/actions/image-builder/action.yml), with
# ${{ inputs.x }} as {x} and the three prepare-* step outputs as {build_args}, {tags} and
# {platforms}, here {prepared_*}.
GO_ACTION_ARGS = (
    "--name={image-name} --context={context} --dockerfile={dockerfile} --target={target} "
    "--oidc-token={oidc-token} --azure-client-id={azure-client-id} "
    "--azure-client-secret={azure-client-secret} --azure-tenant-id={azure-tenant-id} "
    "{prepared_build_args} {prepared_tags} {prepared_platforms} --export-tags={export-tags} --config={config} "
    "--use-go-internal-sap-modules={use-go-internal-sap-modules} "
    "--use-restricted-registry={use-restricted-registry}"
)


def prepared(flag: str, lines: str) -> str:
    """What the Go action's prepare-* steps write: ` --flag="line"` for each non-empty line."""
    return "".join(f' --{flag}="{line}"' for line in lines.splitlines() if line)


def go_action_argv(inputs: dict[str, str]) -> list[str]:
    """The container's argv: the runner splits `args` at spaces outside double quotes."""
    line = GO_ACTION_ARGS.format(
        prepared_build_args=prepared("build-arg", inputs["build-args"]),
        prepared_tags=prepared("tag", inputs["tags"]),
        prepared_platforms=prepared("platform", inputs["platforms"]),
        **inputs,
    )
    return shlex.split(line)


REPORT = {
    "version": 1, "status": "Succeeded", "pushed": True, "signed": False,
    "image_name": "test-infra", "images_list": ["r.example/dev/test-infra:PR-10410"],
    "digest": "sha256:" + "b" * 64, "tags": ["PR-10410"], "repository_path": "r.example/dev/",
    "architectures": ["linux/arm64", "linux/amd64"], "platforms": ["linux/arm64", "linux/amd64"],
}  # fmt: skip
PR_BASE, PR_HEAD = (
    "4b91c74a2aa9aeeb4a265cf1ffe2dd54812b4124",
    "8d0172d980653a377317a8bff9a6bb6ec2334801",
)

# The Go workflow's defaults for the action's inputs (name: the repository's name).
WORKFLOW_DEFAULTS = {
    "image-name": "test-infra", "context": ".", "dockerfile": "./Dockerfile", "build-args": "",
    "tags": "", "export-tags": "false", "config": "./configs/image-builder-client-config.yaml",
    "use-go-internal-sap-modules": "false", "platforms": "linux/arm64\nlinux/amd64\n",
    "target": "", "use-restricted-registry": "false",
}  # fmt: skip


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        (WORKFLOW_DEFAULTS, {}),
        (
            {**WORKFLOW_DEFAULTS, "build-args": "GO_VERSION=1.22\nBIN=app",
             "tags": "latest\nrelease=r-{{ .ShortSHA }}", "export-tags": "true",
             "use-go-internal-sap-modules": "true", "use-restricted-registry": "true",
             "target": "final", "platforms": "linux/amd64\n"},
            {"BuildArgs": "GO_VERSION=1.22,BIN=app", "ExportTags": "true", "Target": "final",
             "Tags": base64.b64encode(b"latest=latest,release=r-{{ .ShortSHA }}").decode(),
             "UseGoInternalSAPModules": "true", "useRestrictedRegistry": "true",
             "Platforms": "linux/amd64"},
        ),
    ],
    ids=["workflow defaults", "every input"],
)  # fmt: skip
def test_the_go_action_command_line_runs_unchanged(
    cli: Cli, tmp_path: Path, inputs: dict[str, str], expected: dict[str, str]
) -> None:
    aad, ado, env = service_principal(tmp_path, uses=1000)
    try:
        ado.log_lines = ["---IMAGE BUILD REPORT---", json.dumps(REPORT),
                         "---END OF IMAGE BUILD REPORT---"]  # fmt: skip
        (tmp_path / "Dockerfile").write_text("FROM scratch\n")
        (tmp_path / "configs").mkdir()
        # kyma's client config (configs/image-builder-client-config.yaml) with the fake's URL.
        (tmp_path / "configs" / "image-builder-client-config.yaml").write_text(
            "log-format: json\n"
            "default-merge-group-tag:\n  name: default_tag\n"
            '  value: "0.0.0-MG.{{ .ShortSHA }}"\n  validation: "^0\\\\.0\\\\.0-MG\\\\.[0-9a-f]{8}$"\n'
            'additional-pr-tag:\n  name: semver_pr_tag\n  value: "v{{ .PRNumber }}-PR"\n'
            '  validation: "^v[0-9]+-PR$"\n' + ado.config_yaml()
        )
        event = tmp_path / "event.json"
        event.write_text(json.dumps({
            "number": 10410,
            "repository": {"name": "test-infra", "owner": {"login": "kyma-project"}},
            "pull_request": {"head": {"sha": PR_HEAD, "ref": "feature"},
                             "base": {"sha": PR_BASE, "ref": "main"}},
        }))  # fmt: skip
        token = secret("caller.oidc.token-from-expose-jwt-action")
        outputs = tmp_path / "outputs"
        client_secret = env.pop("AZURE_CLIENT_SECRET")
        argv = go_action_argv(
            {**inputs, "oidc-token": token, "azure-client-id": env.pop("AZURE_CLIENT_ID"),
             "azure-client-secret": client_secret, "azure-tenant-id": env.pop("AZURE_TENANT_ID")}
        )  # fmt: skip
        env.update(
            CI="true",
            GITHUB_EVENT_NAME="pull_request_target",
            GITHUB_EVENT_PATH=str(event),
            GITHUB_OUTPUT=str(outputs),
            AUTHORIZATION="",
        )
        run = cli(*argv, env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        (created,) = ado.runs_created()
        assert created.json()["templateParameters"] == {
            "RepoName": "test-infra", "RepoOwner": "kyma-project", "JobType": "presubmit",
            "PullNumber": "10410", "PullBaseSHA": PR_BASE, "PullPullSHA": PR_HEAD,
            "Name": "test-infra", "Dockerfile": "./Dockerfile", "Context": ".",
            "ExportTags": "false", "Platforms": "linux/arm64,linux/amd64", **expected,
        }  # fmt: skip
        # The one deliberate difference: the token is a secret variable, not a parameter.
        assert created.json()["variables"] == {"AUTHORIZATION": {"value": token, "isSecret": True}}
        out = outputs.read_text()
        for name in ("images", "architectures", "digest", "build-report", "adoResult"):
            assert f"{name}<<" in out
        assert '["linux/arm64", "linux/amd64"]' in out
        assert leaks(token, run.stdout, run.stderr) == []
        assert leaks(client_secret, run.stdout, run.stderr) == []
        assert leaks(client_secret, out, directives=False) == []
    finally:
        ado.stop()
        aad.stop()


def test_the_token_goes_as_a_parameter_when_config_asks(cli: Cli, tmp_path: Path) -> None:
    """ado-token-as-parameter: for pipelines that expect the Go tool's Authorization."""
    aad, ado, env = service_principal(tmp_path, uses=1000)
    try:
        ado.log_lines = ["---IMAGE BUILD REPORT---", json.dumps(REPORT),
                         "---END OF IMAGE BUILD REPORT---"]  # fmt: skip
        (tmp_path / "Dockerfile").write_text("FROM scratch\n")
        (tmp_path / "config.yaml").write_text(ado.config_yaml(**{"ado-token-as-parameter": "true"}))
        token = env["AUTHORIZATION"]
        run = cli("--name=test-infra", "--config=config.yaml", env=env, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        (created,) = ado.runs_created()
        assert created.json()["templateParameters"]["Authorization"] == token
        assert "variables" not in created.json()
        assert leaks(token, run.stdout, run.stderr) == []
    finally:
        ado.stop()
        aad.stop()
