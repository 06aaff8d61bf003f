"""``image-builder build`` against real buildah and real Distribution registries."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Cli,
    Registry,
    image_config,
    inspect_raw,
    make_storage_conf,
    manifest_digest,
    read_file,
    secret,
    tool_env,
)
from tests.support.inputs import config, context, github


def test_single_platform_build_push_and_report(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(
        tmp_path,
        f"FROM {base_image}\nRUN echo built > /built\nCOPY data.txt /data.txt\n",
        **{"data.txt": "payload\n"},
    )
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    report_file = tmp_path / "report.json"
    outputs = tmp_path / "github_output"
    summary = tmp_path / "summary.md"
    run = cli(
        "build", "--name", "team/single", "--context", str(ctx), "--config", cfg,
        "--platform", "linux/amd64", "--tag", "latest", "--build-report-path", str(report_file),
        env=github("push", "push.new-branch.json", GITHUB_OUTPUT=str(outputs), GITHUB_STEP_SUMMARY=str(summary)),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = run.report
    refs = [f"{registry.address}/prod/team/single:{t}" for t in report["tags"]]
    assert report["status"] == "Succeeded"
    assert report["pushed"] is True
    assert report["signed"] is False
    assert report["images_list"] == refs
    assert report["tags"][0] == "latest"
    assert report["tags"][1].startswith("v")  # the default tag comes last, as in the Go tool
    assert report["architectures"] == ["linux/amd64"]
    assert report["repository_path"] == f"{registry.address}/prod/"
    assert json.loads(report_file.read_text()) == report
    for ref in refs:  # checked independently, with skopeo
        assert manifest_digest(ref) == report["digest"]
    cfg_blob = image_config(refs[0])
    labels = cfg_blob["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
    assert labels["org.opencontainers.image.source"] == "https://github.com/Codertocat/Hello-World"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert cfg_blob["architecture"] == "amd64"
    out = outputs.read_text()
    assert "images<<ghadelimiter_" in out
    assert json.dumps(refs) in out
    assert "digest<<" in out
    assert str(report["digest"]) in out
    assert '["linux/amd64"]' in out
    assert "| Image | Digest | Architectures |" in summary.read_text()
    assert "::group::build team/single" in run.stderr


def test_multi_platform_index_with_run_steps(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nRUN uname -m > /arch\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/multi", "--context", str(ctx), "--config", cfg,
        "--platform", "linux/amd64", "--platform", "linux/arm64", "--tag", "v1",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = run.report
    assert report["architectures"] == ["linux/amd64", "linux/arm64"]
    ref = f"{registry.address}/prod/team/multi:v1"
    index = inspect_raw(ref)
    assert index is not None
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    platforms = [m["platform"]["architecture"] for m in index["manifests"]]
    assert sorted(platforms) == ["amd64", "arm64"]
    assert manifest_digest(ref) == report["digest"]
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        assert image_config(ref, arch)["architecture"] == arch
        assert read_file(ref, "/arch", cli.storage, cli.home, f"linux/{arch}").strip() == machine


@pytest.fixture
def second_registry(tmp_path: Path) -> Iterator[Registry]:
    server = Registry(tmp_path / "registry-b")
    server.start()
    yield server
    server.stop()


def test_two_registries(
    cli: Cli, registry: Registry, second_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="a\n")
    cfg = config(tmp_path, f"registry: [{registry.address}/two, {second_registry.address}/two]\n")
    run = cli(
        "build", "--name", "team/two", "--context", str(ctx), "--config", cfg, "--tag", "x",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = run.report
    assert len(report["images_list"]) == 4
    for ref in report["images_list"]:
        assert manifest_digest(ref) == report["digest"]
    assert {r.split("/")[0] for r in report["images_list"]} == {
        registry.address,
        second_registry.address,
    }


def test_pull_request_goes_to_dev_and_push_to_prod(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="a\n")
    cfg = config(
        tmp_path, f"registry: {registry.address}/prod\ndev-registry: {registry.address}/dev\n"
    )
    pr = cli(
        "build", "--name", "team/flow", "--context", str(ctx), "--config", cfg,
        env=github("pull_request_target", "pull_request_target.synchronize.json"),
    )  # fmt: skip
    assert pr.returncode == 0, pr.stderr
    assert pr.report["images_list"] == [f"{registry.address}/dev/team/flow:PR-123"]
    assert manifest_digest(f"{registry.address}/dev/team/flow:PR-123") == pr.report["digest"]
    assert inspect_raw(f"{registry.address}/prod/team/flow:PR-123") is None

    push = cli(
        "build", "--name", "team/flow", "--context", str(ctx), "--config", cfg,
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert push.returncode == 0, push.stderr
    (ref,) = push.report["images_list"]
    assert ref.startswith(f"{registry.address}/prod/team/flow:v")
    assert ref.endswith("-6113728f")
    assert manifest_digest(ref) == push.report["digest"]


def test_export_tags_env_file_and_target(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    dockerfile = (
        f"FROM {base_image} AS first\n"
        "ARG TAG_release\nARG FROM_ENV_FILE\nARG FROM_FLAG\n"
        'RUN echo "$TAG_release|$FROM_ENV_FILE|$FROM_FLAG" > /values\n'
        f"FROM {base_image} AS second\nRUN echo second > /second\n"
    )
    ctx = context(tmp_path, dockerfile, envs="FROM_ENV_FILE=file-value\nFROM_FLAG=loses\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/args", "--context", str(ctx), "--config", cfg,
        "--tag", "release=r-{{ .ShortSHA }}", "--export-tags", "--env-file", "envs",
        "--build-arg", "FROM_FLAG=flag-value", "--target", "first",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    ref = f"{registry.address}/prod/team/args:r-6113728f"
    assert ref in run.report["images_list"]
    values = read_file(ref, "/values", cli.storage, cli.home).strip()
    assert values == "r-6113728f|file-value|flag-value"
    with pytest.raises(FileNotFoundError):  # --target first: the second stage is not in the image
        read_file(ref, "/second", cli.storage, cli.home)


def test_cache_hit_after_local_storage_is_wiped(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n")
    cfg = config(
        tmp_path,
        f"registry: {registry.address}/prod\n"
        f"cache:\n  enabled: true\n  cache-repo: {registry.address}/cache/team-cached\n",
    )
    args = ("build", "--name", "team/cached", "--context", str(ctx), "--config", cfg)
    cli.storage = make_storage_conf(tmp_path / "first-storage")
    first = cli(*args, "--tag", "one", env=github("push", "push.new-branch.json"))
    assert first.returncode == 0, first.stderr
    stamp_one = read_file(
        f"{registry.address}/prod/team/cached:one", "/stamp", cli.storage, cli.home
    )
    shutil.rmtree(tmp_path / "first-storage", ignore_errors=True)

    cli.storage = make_storage_conf(tmp_path / "second-storage")  # empty: nothing cached locally
    second = cli(*args, "--tag", "two", env=github("push", "push.new-branch.json"))
    assert second.returncode == 0, second.stderr
    assert "Cache" in second.stderr  # buildah says it reused the remote cache
    stamp_two = read_file(
        f"{registry.address}/prod/team/cached:two", "/stamp", cli.storage, cli.home
    )
    assert stamp_one == stamp_two  # the RUN step did not run again


def test_reproducible_builds_give_the_same_digest(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nRUN echo same > /same\nCOPY a /a\n", a="a\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\nreproducible: true\n")
    digests = []
    for tag in ("first", "second"):
        cli.storage = make_storage_conf(tmp_path / f"storage-{tag}")
        run = cli(
            "build", "--name", "team/repro", "--context", str(ctx), "--config", cfg,
            "--platform", "linux/amd64,linux/arm64", "--tag", tag,
            env=github("push", "push.new-branch.json", SOURCE_DATE_EPOCH="1700000000"),
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        digests.append(run.report["digest"])
    assert digests[0] == digests[1]
    created = image_config(f"{registry.address}/prod/team/repro:first")["created"]
    assert str(created).startswith("2023-11-14T22:13:20")


def test_failing_run_step_pushes_nothing(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nRUN echo about to fail && false\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/broken", "--context", str(ctx), "--config", cfg, "--tag", "x",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 1
    report = run.report
    assert report["status"] == "Failed"
    assert report["pushed"] is False
    assert report["images_list"] == []
    assert report["digest"] is None
    assert "build failed: build for linux/amd64 failed (exit code 1)" in str(report["error"])
    assert "::error::build failed" in run.stderr
    assert inspect_raw(f"{registry.address}/prod/team/broken:x") is None


def test_atomic_publish_moves_no_tag_while_one_registry_refuses(
    cli: Cli, registry: Registry, second_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """The default publish-mode: the image lands in the registry that accepts it, by digest,
    but no tag moves anywhere until every registry holds it; a rerun then publishes it all."""
    second_registry.restart(read_only=True)  # answers uploads with 405, for good
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="a\n")
    cfg = config(tmp_path, f"registry: [{registry.address}/ok, {second_registry.address}/ro]\n")
    args = ("build", "--name", "team/partial", "--context", str(ctx), "--config", cfg, "--tag", "t")
    env = github("push", "push.new-branch.json", SOURCE_DATE_EPOCH="1700000000")
    run = cli(*args, env=env)
    assert run.returncode == 1
    report = run.report
    assert (report["status"], report["pushed"], report["images_list"]) == ("Failed", False, [])
    assert report["publish_mode"] == "atomic"
    digest = report["digest"]
    assert report["stored_in"] == [f"{registry.address}/ok/team/partial@{digest}"]
    assert manifest_digest(report["stored_in"][0]) == digest
    failed = {f["image"]: f["error"] for f in report["failed_images"]}
    assert len(failed) == 4
    for ref, why in failed.items():
        assert inspect_raw(ref) is None, f"{ref} moved although the publish was not complete"
        if ref.startswith(second_registry.address):
            assert "StatusCode: 405" in why
        else:
            assert "no tag moved" in why
    assert "1 of 2 repository(ies) did not receive the image" in run.stderr
    assert "no tag moved anywhere (publish-mode: atomic); a rerun publishes it all" in run.stderr

    second_registry.restart(read_only=False)
    rerun = cli(*args, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.report["pushed"] is True
    assert sorted(rerun.report["images_list"]) == sorted(failed)


def test_best_effort_publish_tags_what_landed_when_a_registry_vanished(
    cli: Cli, registry: Registry, second_registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="a\n")
    cfg = config(
        tmp_path,
        f"registry: [{registry.address}/ok, {second_registry.address}/gone]\n"
        "publish-mode: best-effort\npublish-timeout: 20s\n",
    )
    second_registry.stop()
    run = cli(
        "build", "--name", "team/vanish", "--context", str(ctx), "--config", cfg, "--tag", "t",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 1
    report = run.report
    assert report["publish_mode"] == "best-effort"
    assert [r.split("/")[0] for r in report["images_list"]] == [registry.address] * 2
    for ref in report["images_list"]:
        assert manifest_digest(ref) == report["digest"]
    assert [f["image"].split("/")[0] for f in report["failed_images"]] == [
        second_registry.address
    ] * 2
    assert "2 tag(s) moved in the other repositories (publish-mode: best-effort)" in run.stderr
    second_registry.start()


def test_buildah_missing_names_the_package(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")  # passes the check first
    run = cli(
        "build", "--name", "x", "--context", str(ctx), "--config", cfg, env={**github("push", "push.new-branch.json"), "PATH": "/nonexistent"},
    )  # fmt: skip
    assert run.returncode == 1
    assert "buildah is not installed; install it with `apt-get install buildah`" in run.stderr
    assert run.report["status"] == "Failed"


def test_dry_run_builds_nothing(cli: Cli, registry: Registry, tmp_path: Path) -> None:
    ctx = context(tmp_path, "FROM scratch\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/dry", "--context", str(ctx), "--config", cfg, "--dry-run",
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    plan = json.loads(run.stdout)
    assert plan["references"] == [f"{registry.address}/prod/team/dry:{plan['tags'][0]['value']}"]
    assert inspect_raw(plan["references"][0]) is None


def test_no_push_keeps_the_image_local(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="local\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/local", "--context", str(ctx), "--config", cfg, "--tag", "dev",
        "--no-push", env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = run.report
    assert report["status"] == "Succeeded"
    assert report["pushed"] is False
    assert report["images_list"] == []
    ref = f"{registry.address}/prod/team/local:dev"
    assert inspect_raw(ref) is None
    assert "nothing was pushed; the image is in local storage as" in run.stderr
    env = tool_env(cli.storage, cli.home)
    listed = subprocess.run(
        ["buildah", "images", "--format", "{{.Name}}:{{.Tag}}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ref in listed


def test_debug_logs_name_build_arguments_never_their_values(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    token = secret("npm_planted0123456789abcdef")
    ctx = context(tmp_path, f'FROM {base_image}\nARG NPM_TOKEN\nRUN test -n "$NPM_TOKEN"\n')
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--debug", "--name", "team/args", "--context", str(ctx), "--config", cfg,
        "--build-arg", f"NPM_TOKEN={token}", "--tag", "dev", env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "--build-arg NPM_TOKEN=***" in run.stderr  # the debug log shows the command line
    assert token not in run.stdout + run.stderr
    dry = cli("build", "--name", "team/args", "--context", str(ctx), "--config", cfg,
              "--build-arg", f"NPM_TOKEN={token}", "--dry-run",
              env=github("push", "push.new-branch.json"))  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["build_args"] == ["NPM_TOKEN"]
