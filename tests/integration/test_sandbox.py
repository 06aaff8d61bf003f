"""Attacks from a pull request's content alone, against a real build as root. Each plants a known
secret where the old design let a RUN step reach it, and proves it appears nowhere: not in the
build output, the image's layers, its history, or the report."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, Registry, assert_nowhere, everything_pushed, secret
from tests.support.escape import static_escape
from tests.support.inputs import config, context, github


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A root-only key file in a folder every account can reach: only its permissions guard it."""
    folder = Path(tempfile.mkdtemp(prefix="ib-planted-"))
    folder.chmod(0o755)
    value = secret("planted-signing-key-9d41c2e7")
    key = folder / "signing.key"
    key.write_text(value + "\n")
    key.chmod(0o600)
    yield key, value
    shutil.rmtree(folder)


def test_a_run_step_that_escapes_its_root_reads_no_secret(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path, planted: tuple[Path, str]
) -> None:
    key, key_value = planted
    password = secret("planted-cosign-password-51f0a8")
    ctx = context(
        tmp_path,
        f"FROM {base_image}\nCOPY escape /escape\n"
        f"RUN /escape {key} COSIGN_PASSWORD= > /loot.txt 2>&1; cat /loot.txt\n",
    )
    static_escape(ctx)
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/escape", "--context", str(ctx), "--config", cfg,
        "--tag", "loot", env=github("push", "push.new-branch.json", COSIGN_PASSWORD=password),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.report["status"] == "Succeeded"
    # The step ran: it tried the key and saw no process outside its own build.
    assert f"FILE {key}: Permission denied" in run.stderr
    pushed = everything_pushed(f"{registry.address}/prod/team/escape:loot", tmp_path / "pushed")
    assert f"FILE {key}: Permission denied".encode() in pushed
    assert_nowhere(key_value, run, pushed)
    assert_nowhere(password, run, pushed)


def test_an_env_file_entry_never_takes_the_machines_value(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    password = secret("planted-cosign-password-77aa03")
    ctx = context(
        tmp_path,
        f'FROM {base_image}\nARG COSIGN_PASSWORD\nRUN echo "got $COSIGN_PASSWORD" > /arg.txt\n',
        envs="COSIGN_PASSWORD=from-the-file\n",
    )
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")
    run = cli(
        "build", "--name", "team/envfile", "--context", str(ctx), "--config", cfg,
        "--env-file", "envs", "--tag", "arg",
        env=github("push", "push.new-branch.json", COSIGN_PASSWORD=password),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    pushed = everything_pushed(f"{registry.address}/prod/team/envfile:arg", tmp_path / "pushed")
    assert b"got from-the-file" in pushed
    assert_nowhere(password, run, pushed)


def test_the_build_refuses_when_its_account_could_read_a_key(
    cli: Cli, registry: Registry, tmp_path: Path, planted: tuple[Path, str]
) -> None:
    key, _ = planted
    key.chmod(0o644)  # a key any account can read: the build account could take it
    ctx = context(tmp_path, "FROM scratch\n")
    cfg = config(
        tmp_path,
        f"registry: {registry.address}/prod\nsign-config:\n  enabled-signers:\n"
        f"    '*': [release]\n  signers:\n  - name: release\n    type: cosign\n"
        f"    config:\n      private-key: {key}\n",
    )
    run = cli(
        "build", "--name", "team/refused", "--context", str(ctx), "--config", cfg,
        env=github("push", "push.new-branch.json"),
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip() == (
        f"::error::the build account ib-sandbox could read the file {key}; make each readable by "
        "root only (chown root, chmod 600, and no world-searchable folder leading to it)"
    )


def test_a_machine_without_uidmap_is_refused_with_the_package_to_install(
    cli: Cli, registry: Registry, tmp_path: Path
) -> None:
    """No opt-out: without newuidmap, RUN steps could not get a user namespace of their own."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("buildah", "skopeo", "unshare", "setpriv", "sh", "git"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    ctx = context(tmp_path, "FROM scratch\n")
    cfg = config(tmp_path, f"registry: {registry.address}/prod\n")  # passes the check first
    run = cli(
        "build", "--name", "team/nouidmap", "--context", str(ctx), "--config", cfg,
        env={**github("push", "push.new-branch.json"), "PATH": str(bin_dir)},
    )  # fmt: skip
    assert run.returncode == 1
    assert "newuidmap is not installed; install it with `apt-get install uidmap`" in run.stderr
    assert run.report["status"] == "Failed"
