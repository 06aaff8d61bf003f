"""Work folders: what a sweep may remove, and what it must never touch. The temp directory is
world-writable, so anyone (a RUN step's account too) can put entries there with our names."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import pytest

from image_builder import workdirs
from image_builder.errors import RuntimeFailure
from image_builder.sandbox import BuildAccount, claim

ME = os.geteuid()


def stale(base: Path) -> list[str]:
    return [p.name for p in workdirs.stale(base, owner=ME)]


def test_a_live_build_is_never_stale_and_a_dead_one_is(tmp_path: Path) -> None:
    work = workdirs.create(tmp_path)
    assert work.path.name.startswith("image-builder-work-")
    assert stale(tmp_path) == []
    work.release()  # what the kernel does when the process dies, however it dies
    assert stale(tmp_path) == [work.path.name]


def test_entries_others_planted_are_never_swept(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".lock").touch()
    (tmp_path / "image-builder-work-link").symlink_to(elsewhere)  # a link to anything
    (tmp_path / "image-builder-work-file").touch()
    planted = tmp_path / "image-builder-work-planted"
    planted.mkdir()
    (planted / ".lock").symlink_to(elsewhere / ".lock")  # a lock that is a link
    # cosign's machine-wide signature locks live next door and have no .lock of their own
    locks = tmp_path / "image-builder-locks-0"
    locks.mkdir()
    os.utime(locks, (0, 0))
    assert stale(tmp_path) == []


def test_another_users_folder_is_never_swept(tmp_path: Path) -> None:
    work = workdirs.create(tmp_path)
    work.release()
    assert [p.name for p in workdirs.stale(tmp_path, owner=ME + 1)] == []


def test_folders_of_earlier_versions_are_swept_once_a_day_old(tmp_path: Path) -> None:
    old, recent = tmp_path / "image-builder-0123456789ab", tmp_path / "image-builder-ba9876543210"
    old.mkdir()
    recent.mkdir()
    os.utime(old, (time.time() - 25 * 3600,) * 2)
    assert stale(tmp_path) == [old.name]


def test_a_build_gives_up_when_every_account_stays_busy(tmp_path: Path) -> None:
    accounts = [BuildAccount(name=f"b{n}", uid=1000 + n, gid=1000, dedicated=True) for n in (0, 1)]
    held = []
    for account in accounts:
        fd = os.open(tmp_path / f"{account.name}.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held.append(fd)
    said: list[str] = []
    try:
        with (
            pytest.raises(RuntimeFailure) as caught,
            claim(accounts, lock_dir=tmp_path, on_wait=said.append, timeout=0.3),
        ):
            pass
    finally:
        for fd in held:
            os.close(fd)
    assert caught.value.exit_code == 1
    assert str(caught.value).startswith("all 2 build accounts stayed busy for 0 s (build-timeout)")
    assert said == ["all 2 build accounts are busy; waiting for one"]
