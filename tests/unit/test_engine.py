"""The buildah engine's decisions that need no buildah: storage driver, registries.conf, qemu."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_builder.engines.buildah import (
    check_emulation,
    choose_storage_driver,
    effective_registries_conf,
)
from image_builder.errors import ToolMissingError
from tests.support.plans import plan


def test_storage_driver(tmp_path: Path) -> None:
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ngraphroot = "{tmp_path / "root"}"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(conf)}
    assert choose_storage_driver(env) == "overlay"  # fresh storage on a normal filesystem
    (tmp_path / "root" / "vfs-images").mkdir(parents=True)
    assert choose_storage_driver(env) == "vfs"  # keep what the storage already uses
    assert choose_storage_driver({**env, "STORAGE_DRIVER": "vfs"}) is None
    conf.write_text('[storage]\ndriver = "overlay"\n')
    assert choose_storage_driver(env) is None  # storage.conf decides


def test_registries_conf_keeps_the_main_file(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text('unqualified-search-registries = ["docker.io"]')
    assert effective_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(main)}) == (
        'unqualified-search-registries = ["docker.io"]\n'
    )
    main.write_text('[registries.search]\nregistries = ["docker.io"]\n')
    assert effective_registries_conf({"CONTAINERS_REGISTRIES_CONF": str(main)}) == ""


def test_foreign_run_steps_need_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nRUN true\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64-static here
    built = plan(platforms=("linux/amd64", "linux/arm64"), dockerfile=dockerfile)
    with pytest.raises(ToolMissingError) as caught:
        check_emulation(built, host_platform="linux/amd64", binfmt_dir=tmp_path)
    assert str(caught.value) == (
        "building linux/arm64 on a linux/amd64 host runs RUN steps under emulation, but "
        "qemu-aarch64-static is missing; install it with "
        "`apt-get install qemu-user-static binfmt-support`"
    )
    qemu = tmp_path / "qemu-aarch64-static"
    qemu.write_text("#!/bin/sh\n")
    qemu.chmod(0o755)
    with pytest.raises(ToolMissingError, match="needs the binfmt_misc handler qemu-aarch64"):
        check_emulation(built, host_platform="linux/amd64", binfmt_dir=tmp_path)
    (tmp_path / "qemu-aarch64").write_text("enabled\n")
    check_emulation(built, host_platform="linux/amd64", binfmt_dir=tmp_path)  # now complete


def test_copy_only_foreign_builds_need_no_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY a /a\n")
    monkeypatch.setenv("PATH", str(tmp_path))
    built = plan(platforms=("linux/arm64",), dockerfile=dockerfile)
    check_emulation(built, host_platform="linux/amd64", binfmt_dir=tmp_path)
