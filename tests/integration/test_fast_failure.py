"""Failing fast and saying why, through the CLI with real buildah and registries: a registry
that is down or refuses the credentials stops a pushing build before anything is built; a
Dockerfile buildah cannot read is bad input (exit 2). And the output says what matters: no
warning about platform arguments nobody passed, one line per repository pushed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, Registry, auth_file, free_port, inspect_raw
from tests.support.inputs import config, context, github

PUSH = github("push", "push.new-branch.json")


def build(name: str, ctx: Path, cfg: str, *extra: str) -> tuple[str, ...]:
    return ("build", "--name", name, "--context", str(ctx), "--config", cfg, *extra)


def built_anything(stderr: str) -> bool:
    return "STEP 1" in stderr


def test_a_closed_registry_port_fails_before_the_build(
    cli: Cli, base_image: str, tmp_path: Path
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="fast\n")
    cfg = config(tmp_path, f"registry: {closed}/fast\n")
    summary = tmp_path / "summary.md"
    run = cli(
        *build("team/fast", ctx, cfg, "--tag", "t1"),
        env={**PUSH, "GITHUB_STEP_SUMMARY": str(summary)},
    )
    message = (
        f"registry {closed} is unreachable (connection refused); check registry in config.yaml, "
        f"or start it (image-builder registry start --address {closed})"
    )
    assert run.returncode == 1, run.stderr
    assert not built_anything(run.stderr), run.stderr
    assert f"::error::{message}" in run.stderr
    report = run.report
    assert (report["status"], report["pushed"], report["digest"]) == ("Failed", False, None)
    assert report["error"] == message
    assert report["images_list"] == []
    assert report["stored_in"] == []
    assert {f["error"] for f in report["failed_images"]} == {message}
    assert len(report["failed_images"]) == 2  # t1 and the default tag
    assert f"**Error:** {message}" in summary.read_text()


@pytest.mark.parametrize("stage", ["--no-push", "--layout-out"])
def test_a_build_that_pushes_nothing_checks_no_registry(
    cli: Cli, base_image: str, tmp_path: Path, stage: str
) -> None:
    closed = f"127.0.0.1:{free_port()}"
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="local\n")
    cfg = config(tmp_path, f"registry: {closed}/local\n")
    extra = (stage, str(tmp_path / "layout")) if stage == "--layout-out" else (stage,)
    run = cli(*build("team/local", ctx, cfg, "--tag", "t1", *extra), env=PUSH)
    assert run.returncode == 0, run.stderr
    assert built_anything(run.stderr)
    assert "unreachable" not in run.stderr


def test_wrong_credentials_fail_before_the_build(
    cli: Cli, private_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="auth\n")
    cfg = config(tmp_path, f"registry: {private_registry.address}/org\n")
    auth = auth_file(tmp_path / "auth.json", private_registry.address, "a-wrong-password-77c1")
    run = cli(
        *build("team/app", ctx, cfg, "--tag", "t1"),
        env={**PUSH, "REGISTRY_AUTH_FILE": str(auth)},
    )
    message = (
        f"registry {private_registry.address} refused the credentials for org/team/app (401); "
        "check REGISTRY_AUTH_FILE or ~/.docker/config.json"
    )
    assert run.returncode == 1, run.stderr
    assert not built_anything(run.stderr), run.stderr
    assert f"::error::{message}" in run.stderr
    assert run.report["error"] == message
    assert run.report["pushed"] is False


def test_no_warning_about_platform_arguments_nobody_passed(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nARG USED=1\nRUN echo $USED\n")
    cfg = config(tmp_path, f"registry: {registry.address}/args\n")
    args = build("team/args", ctx, cfg, "--no-push", "--platform", "linux/amd64")

    plain = cli(*args, "--build-arg", "USED=2", env=PUSH)
    assert plain.returncode == 0, plain.stderr
    assert "TARGETARCH" not in plain.stderr
    assert "not consumed" not in plain.stderr

    unused = cli(*args, "--build-arg", "NOT_IN_THE_DOCKERFILE=1", env=PUSH)
    assert unused.returncode == 0, unused.stderr
    assert "one or more build args were not consumed: [NOT_IN_THE_DOCKERFILE]" in unused.stderr
    assert "TARGETARCH" not in unused.stderr


def test_one_push_line_per_repository(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="lines\n")
    repositories = [f"{registry.address}/one", f"{registry.address}/two"]
    cfg = config(tmp_path, f"registry: [{', '.join(repositories)}]\n")
    run = cli(
        *build(
            "team/lines", ctx, cfg, "--tag", "t1", "--tag", "t2",
            "--platform", "linux/amd64,linux/arm64",
        ),
        env=PUSH,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    digest = run.report["digest"]
    for repository in repositories:
        ref = f"{repository}/team/lines@{digest}"
        lines = [line for line in run.stderr.splitlines() if line.startswith(f"pushed {ref}")]
        assert len(lines) == 1, run.stderr
        assert re.fullmatch(rf"pushed {re.escape(ref)} \(\d+ blobs, 2 platforms\)", lines[0])
    # skopeo's per-blob lines, once for every repository, are debug output now
    assert not [line for line in run.stderr.splitlines() if line.startswith("[127.0.0.1:")]
    assert "Copying blob" not in run.stderr.split("publish to 2 repository(ies)")[1]
    # the report names each platform's manifest of what the registry holds
    index = inspect_raw(f"{repositories[0]}/team/lines@{digest}")
    assert index is not None
    listed = [
        {
            "platform": f"{m['platform']['os']}/{m['platform']['architecture']}",
            "digest": m["digest"],
        }
        for m in index["manifests"]
    ]
    assert run.report["manifests"] == listed


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        (
            "FRUM {base}\nCOPY a /a\n",
            "Dockerfile line 1: unknown instruction FRUM (did you mean FROM?); fix the Dockerfile",
        ),
        (  # found by buildah itself, and turned into the same kind of error
            "FROM {base}\nCOPY\n",
            "Dockerfile: buildah cannot read it (COPY requires at least one argument); fix the "
            "Dockerfile",
        ),
    ],
)
def test_a_dockerfile_syntax_error_is_bad_input(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path, dockerfile: str, message: str
) -> None:
    ctx = context(tmp_path, dockerfile.format(base=base_image), a="a\n")
    cfg = config(tmp_path, f"registry: {registry.address}/syntax\n")
    run = cli(*build("team/syntax", ctx, cfg, "--tag", "t1"), env=PUSH)
    assert run.returncode == 2, run.stderr
    assert f"::error::{message}" in run.stderr
    assert inspect_raw(f"{registry.address}/syntax/team/syntax:t1") is None
