"""The composite action run as a GitHub runner would run it, against the real registry with the
local backend, a test OIDC issuer behind a fake runner token service, and a cosign signer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EVENTS, leaks
from tests.integration.conftest import REPO, Cli, Registry, record, secret, tool_env
from tests.support.oidc import FakeIssuer, TokenEndpoint
from tests.support.runner import ActionRun, parse_outputs, run_action

PASSWORD = secret("action-key-password")
OWNER_ID = 21031067  # Codertocat, the owner in GitHub's example payloads


@pytest.fixture(scope="module")
def runner_temp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One RUNNER_TEMP for the module, so the action's install step really runs, once."""
    return tmp_path_factory.mktemp("runner-temp")


def setup(
    tmp_path: Path, cli: Cli, registry: Registry, issuer: FakeIssuer, base_image: str
) -> tuple[Path, Path, Path]:
    workspace = tmp_path / "workspace"
    (workspace / "app").mkdir(parents=True)
    (workspace / "app" / "Dockerfile").write_text(
        f"FROM {base_image}\nARG TAG_default_tag\nRUN echo $TAG_default_tag > /tag\n"
    )
    keys = subprocess.run(
        [str(REPO / ".venv" / "bin" / "image-builder"), "keygen", "--output-key-prefix", str(tmp_path / "release")],
        env={**tool_env(cli.storage, cli.home), "COSIGN_PASSWORD": PASSWORD}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    paths = json.loads(keys.stdout)
    config = tmp_path / "config.yaml"
    config.write_text(
        f"registry: {registry.address}/prod\ndev-registry: {registry.address}/dev\n"
        + issuer.trust_yaml(
            **{
                "repository-owners": f"[{{name: Codertocat, id: {OWNER_ID}}}]",
                "image-namespaces": "{Codertocat/Hello-World: ['hello/*']}",
            }
        )
        + "sign-config:\n  enabled-signers: {'*': [release-key]}\n  signers:\n"
        f"    - {{name: release-key, type: cosign, config: {{private-key: {paths['private_key']}, password-env: COSIGN_PASSWORD}}}}\n"
    )
    return workspace, config, Path(paths["public_key"])


def runner_env(
    cli: Cli, tmp_path: Path, event: str, payload: str, endpoint: TokenEndpoint, **extra: str
) -> dict[str, str]:
    return tool_env(
        cli.storage, cli.home,
        GITHUB_ACTIONS="true", CI="true", GITHUB_EVENT_NAME=event, GITHUB_EVENT_PATH=str(EVENTS / payload),
        GITHUB_REPOSITORY="Codertocat/Hello-World", GITHUB_SERVER_URL="https://github.com",
        ACTIONS_ID_TOKEN_REQUEST_URL=endpoint.url, ACTIONS_ID_TOKEN_REQUEST_TOKEN=TokenEndpoint.REQUEST_TOKEN,
        COSIGN_PASSWORD=PASSWORD, **extra,
    )  # fmt: skip


def act(workspace: Path, runner_temp: Path, env: dict[str, str], **inputs: str) -> ActionRun:
    run = run_action(REPO, inputs=inputs, env=env, workspace=workspace, temp=runner_temp)
    record("composite action log", run.log, directives=True)
    record("composite action outputs", json.dumps(run.outputs))
    for number in range(len(run.steps)):
        output = runner_temp / f"output-{number}"
        if output.exists():
            text = output.read_text()
            token = parse_outputs(text).get("token")
            if token:
                secret(token)  # the token step's own output file is where the token belongs
            else:
                record(f"step {number} GITHUB_OUTPUT", text)
    record("step summary", (runner_temp / "step_summary.md").read_text())
    return run


CLAIMS = {
    "repository": "Codertocat/Hello-World",
    "repository_owner": "Codertocat",
    "repository_owner_id": str(OWNER_ID),
}


def test_push_event_goes_to_prod_signed(
    cli: Cli,
    registry: Registry,
    issuer: FakeIssuer,
    base_image: str,
    tmp_path: Path,
    runner_temp: Path,
) -> None:
    workspace, config, public_key = setup(tmp_path, cli, registry, issuer, base_image)
    endpoint = TokenEndpoint(
        issuer, event_name="push", sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246", **CLAIMS
    ).start()
    try:
        env = runner_env(cli, tmp_path, "push", "push.new-branch.json", endpoint)
        run = act(
            workspace, runner_temp, env, name="hello/world", context="app", backend="local",
            config=str(config), tags="latest\nrelease=r-{{ .ShortSHA }}", **{"export-tags": "true", "platforms": "linux/amd64\nlinux/arm64"},
        )  # fmt: skip
    finally:
        endpoint.stop()
    assert run.ok, run.log
    assert endpoint.audiences == ["image-builder"]
    images = json.loads(run.outputs["images"])
    assert len(images) == 3
    assert all(i.startswith(f"{registry.address}/prod/hello/world:") for i in images)
    assert f"{registry.address}/prod/hello/world:r-6113728f" in images
    assert json.loads(run.outputs["architectures"]) == ["linux/amd64", "linux/arm64"]
    assert run.outputs["digest"].startswith("sha256:")
    report = json.loads(run.outputs["build-report"])
    assert report["signed"] is True
    summary = (runner_temp / "step_summary.md").read_text()
    assert "| Image | Digest | Architectures |" in summary
    assert f"| `{images[0]}` | `{run.outputs['digest']}` | linux/amd64, linux/arm64 |" in summary
    verified = cli("verify", images[0], "--key", str(public_key))
    assert verified.returncode == 0, verified.stderr
    build_step = run.steps[-1]
    assert "::group::build hello/world for linux/amd64, linux/arm64" in build_step.stderr
    token = parse_outputs((runner_temp / "output-1").read_text())["token"]
    assert leaks(token, run.log, json.dumps(run.outputs)) == []
    assert leaks(PASSWORD, run.log) == []


def test_pull_request_target_goes_to_dev_unsigned(
    cli: Cli,
    registry: Registry,
    issuer: FakeIssuer,
    base_image: str,
    tmp_path: Path,
    runner_temp: Path,
) -> None:
    workspace, config, public_key = setup(tmp_path, cli, registry, issuer, base_image)
    endpoint = TokenEndpoint(
        issuer,
        event_name="pull_request_target",
        ref="refs/heads/master",
        sha="f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
        **CLAIMS,
    ).start()
    try:
        env = runner_env(
            cli, tmp_path, "pull_request_target", "pull_request_target.synchronize.json", endpoint
        )
        run = act(
            workspace,
            runner_temp,
            env,
            name="hello/world",
            context="app",
            backend="local",
            config=str(config),
            platforms="linux/amd64",
        )
    finally:
        endpoint.stop()
    assert run.ok, run.log
    assert json.loads(run.outputs["images"]) == [f"{registry.address}/dev/hello/world:PR-123"]
    report = json.loads(run.outputs["build-report"])
    assert report["signed"] is False
    assert report["signed_by"] == []
    unsigned = cli("verify", f"{registry.address}/dev/hello/world:PR-123", "--key", str(public_key))
    assert unsigned.returncode == 1
    assert "no signature" in unsigned.stderr


def test_inputs_reach_the_tool_as_literal_values(
    cli: Cli,
    registry: Registry,
    issuer: FakeIssuer,
    base_image: str,
    tmp_path: Path,
    runner_temp: Path,
) -> None:
    workspace, config, _ = setup(tmp_path, cli, registry, issuer, base_image)
    marker = tmp_path / "pwned"
    hostile = f'"; echo pwned > {marker}; echo "'
    endpoint = TokenEndpoint(
        issuer, event_name="push", sha="6113728f27ae82c7b1a177c8d03f9e96e0adf246", **CLAIMS
    ).start()
    try:
        env = runner_env(cli, tmp_path, "push", "push.new-branch.json", endpoint)
        run = act(
            workspace,
            runner_temp,
            env,
            name="hello/world",
            context="app",
            backend="local",
            config=str(config),
            tags=hostile,
            target=f"$(touch {marker})",
        )
    finally:
        endpoint.stop()
    assert not run.ok
    build = run.steps[-1]
    assert build.returncode == 2
    assert f"--tag {hostile!r}" in build.stderr  # the literal value, refused as a tag
    assert not marker.exists()


def test_oidc_token_needs_the_permission(cli: Cli, tmp_path: Path) -> None:
    outputs = tmp_path / "out"
    run = cli("github", "oidc-token", env={"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(outputs)})
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "::error::ACTIONS_ID_TOKEN_REQUEST_URL is not set: the calling workflow needs `permissions: "
        "id-token: write` (on the job or the workflow) for GitHub to issue OIDC tokens"
    )
