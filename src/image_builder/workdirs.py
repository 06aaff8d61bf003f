"""Work folders that a later run can tell apart from live ones, and the locks of other processes
that a build may have to wait for.

Each build's folder (``image-builder-work-<hex>`` in the temp directory) holds an exclusive lock on
its ``.lock`` file for as long as its process lives; the kernel drops the lock when the process
dies, however it dies. A folder whose lock can be taken belongs to no live process, so a later
run sweeps it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from image_builder.errors import RuntimeFailure

PREFIX = "image-builder-work-"
_NEW = "image-builder-new-"  # a folder being made: never swept
LOCK = ".lock"
# Folders of versions before the lock file (image-builder-<12 hex>), swept once this old.
_LEGACY = re.compile(r"image-builder-[0-9a-f]{12}")
_LEGACY_AGE = 24 * 3600.0


@dataclass(frozen=True)
class WorkDir:
    path: Path
    fd: int  # holds the lock; closed by release()

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def create(base: Path, mode: int = 0o700) -> WorkDir:
    """A new folder ``base/image-builder-work-<hex>``, locked by this process. It is made and
    locked under a name the sweep ignores, then renamed, so no sweep can see it unlocked. (Not
    mkdtemp: its names may hold "_", which buildah refuses in an ``oci:`` reference.)"""
    token = secrets.token_hex(6)
    making = base / f"{_NEW}{token}"
    making.mkdir(mode=mode)
    fd = os.open(making / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    path = base / f"{PREFIX}{token}"
    making.rename(path)
    return WorkDir(path=path, fd=fd)


def stale(base: Path, *, owner: int, now: float | None = None) -> Iterator[Path]:
    """The work folders in ``base``, owned by ``owner``, that no live process holds."""
    now = time.time() if now is None else now
    try:
        candidates = sorted(base.iterdir())
    except OSError:
        return
    for path in candidates:
        legacy = _LEGACY.fullmatch(path.name) is not None
        if not (path.name.startswith(PREFIX) or legacy):
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner:
            continue  # a symlink, a file, or another user's: never followed, never removed
        if legacy:
            if now - info.st_mtime > _LEGACY_AGE:
                yield path
            continue
        try:
            fd = os.open(path / LOCK, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live build
        finally:
            os.close(fd)
        yield path


def sweep(base: Path, remove: Callable[[Path], None], *, owner: int) -> list[Path]:
    """Remove every stale work folder of ``owner`` in ``base`` with ``remove``."""
    swept = []
    for path in stale(base, owner=owner):
        with contextlib.suppress(OSError, RuntimeFailure):
            remove(path)
            swept.append(path)
    return swept


# --- another process's lock -----------------------------------------------------------------

_FLOCK = "hhqqi"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def lock_holder(path: Path) -> int | None:
    """The pid of a process that holds a POSIX (fcntl) lock on ``path``, as containers/storage
    takes them, or ``None`` when nobody does (or the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.EINVAL):
            return None
        raise
    finally:
        os.close(fd)
    kind, _, _, _, pid = struct.unpack(_FLOCK, answer[: struct.calcsize(_FLOCK)])
    return None if kind == fcntl.F_UNLCK else pid


def wait_for_lock(
    path: Path,
    *,
    timeout: float,
    say: Callable[[str], None],
    what: str,
    after: float = 3.0,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Wait while another process holds ``path``: say so after ``after`` seconds, give up after
    ``timeout`` with a message that names the lock and its holder."""
    start = time.monotonic()
    said = False
    while (holder := lock_holder(path)) is not None:
        waited = time.monotonic() - start
        if stopping():
            raise RuntimeFailure(f"stopped while waiting for {what} ({path})")
        if waited >= timeout:
            raise RuntimeFailure(
                f"{what} ({path}) stayed locked by {_process(holder)} for {waited:.0f} s "
                "(lock-timeout); stop that process or wait for it, then run again"
            )
        if not said and waited >= after:
            say(f"waiting for {what}: {path} is locked by {_process(holder)}")
            said = True
        time.sleep(0.2)


def _process(pid: int) -> str:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return f"process {pid}"
    return f"process {pid} ({name})"
