"""The one subprocess helper. It finds the tool, says which Debian package installs a missing
one, logs the command with secrets masked, streams output when asked, and turns failures into
the project's own errors."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from image_builder.errors import RuntimeFailure, ToolMissingError

log = logging.getLogger(__name__)

# Which Debian package installs each program this project runs.
PACKAGES = {
    "buildah": "buildah",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "git": "git",
    "qemu-aarch64-static": "qemu-user-static",
    "newuidmap": "uidmap",
    "newgidmap": "uidmap",
    "unshare": "util-linux",
    "setpriv": "util-linux",
}

_TAIL_LINES = 40


class Children:
    """The child processes that :func:`run` is waiting for, so that a signal can stop them all.
    Process-wide on purpose: a signal is."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen[str]] = set()
        self.stopping = False
        self.reason: str | None = None

    def add(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.add(process)
            stopping = self.stopping
        if stopping:
            _stop(process)

    def discard(self, process: subprocess.Popen[str]) -> None:
        with self._lock:
            self._live.discard(process)

    def stop_all(self, reason: str) -> int:
        """Stop every child (and its process group), now and any started later; how many.
        ``reason`` (e.g. "SIGTERM") is what reports say."""
        with self._lock:
            self.stopping = True
            self.reason = reason
            live = list(self._live)
        _stop(*live)
        return len(live)


CHILDREN = Children()


def _stop(*processes: subprocess.Popen[str], grace: float = 2.0) -> None:
    """SIGTERM to each child's process group, then SIGKILL to those still there after
    ``grace`` seconds, all together."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if all(process.poll() is not None for process in processes):
                return
            time.sleep(0.02)


@dataclass(frozen=True, kw_only=True)
class Result:
    returncode: int
    output: str  # stdout and stderr, interleaved as the tool wrote them


def which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = PACKAGES.get(tool, tool)
        raise ToolMissingError(
            f"{tool} is not installed; install it with `apt-get install {package}` "
            "(or run scripts/setup)"
        )
    return path


def mask(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


_VALUE_FLAGS = ("--build-arg",)


def shown_command(argv: Sequence[str], secrets: Iterable[str] = ()) -> str:
    """The command line for logs and messages: build arguments by name only (their values may be
    secrets), and every known secret masked."""
    parts: list[str] = []
    hide_next = False
    for arg in argv:
        flag, eq, value = arg.partition("=")
        if hide_next:
            parts.append(arg.split("=", 1)[0] + "=***")
        elif eq and flag in _VALUE_FLAGS:
            parts.append(f"{flag}={value.split('=', 1)[0]}=***")
        else:
            parts.append(arg)
        hide_next = arg in _VALUE_FLAGS
    return mask(" ".join(parts), secrets)


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
    on_line: Callable[[str], None] | None = None,
    check: bool = True,
    what: str | None = None,
    stdin: str | None = None,
    timeout: float | None = None,
    cwd: Path | None = None,
) -> Result:
    """Run ``argv`` (in ``cwd``, if given) and return its combined output.

    ``on_line`` receives each output line as it arrives (masked), for streaming. With ``check``,
    a non-zero exit raises :class:`RuntimeFailure` naming ``what`` and quoting the output's tail.
    After ``timeout`` seconds the child and everything it started are stopped, and
    :class:`Timeout` is raised. The child dies with this process, even on SIGKILL.
    """
    hidden = [s for s in secrets if s]
    command = [which(argv[0]), *argv[1:]]
    setpriv = shutil.which("setpriv")
    if setpriv:
        # The kernel kills the child when the thread that started it goes away.
        command = [setpriv, "--pdeathsig", "KILL", "--", *command]
    shown = shown_command(argv, hidden)
    log.debug("running %s", shown)
    if CHILDREN.stopping:
        raise Cancelled(f"{what or argv[0]} was not started: image-builder is stopping")
    try:
        process = subprocess.Popen(
            command,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            start_new_session=True,  # its own process group, which _stop ends as a whole
        )
    except OSError as exc:
        raise RuntimeFailure(f"cannot start {argv[0]}: {exc.strerror}") from None
    CHILDREN.add(process)
    timer = None
    expired = threading.Event()
    if timeout is not None:

        def expire() -> None:
            expired.set()
            _stop(process)

        timer = threading.Timer(max(timeout, 0.0), expire)
        timer.daemon = True
        timer.start()
    try:
        if stdin is not None:
            threading.Thread(target=_feed, args=(process, stdin), daemon=True).start()
        lines: list[str] = []
        for raw in process.stdout or ():
            line = mask(raw.rstrip("\n"), hidden)
            lines.append(line)
            if on_line is not None:
                on_line(line)
        returncode = process.wait()
    finally:
        if timer is not None:
            timer.cancel()
        CHILDREN.discard(process)
    output = "\n".join(lines)
    if expired.is_set():
        raise Timeout(
            f"{what or shown} did not finish within {_seconds(timeout)}; stopped it"
        ) from _Output("\n".join(lines[-_TAIL_LINES:]).strip())
    if CHILDREN.stopping and returncode != 0:
        raise Cancelled(f"{what or shown} was stopped: image-builder is stopping")
    if check and returncode != 0:
        tail = "\n".join(lines[-_TAIL_LINES:]).strip()
        last = next((line for line in reversed(lines) if line.strip()), "")
        raise RuntimeFailure(
            f"{what or shown} failed (exit code {returncode}): {last.strip()}",
        ) from _Output(tail)
    return Result(returncode=returncode, output=output)


class Timeout(RuntimeFailure):
    """A child ran past its deadline and was stopped."""


class Cancelled(RuntimeFailure):
    """A child was stopped because image-builder received SIGTERM or SIGINT."""


def _seconds(value: float | None) -> str:
    return f"{value:.0f} s" if value is not None and value >= 1 else f"{value or 0:.1f} s"


class _Output(Exception):
    """The tail of a failed command's output, chained for ``--debug``."""


def _feed(process: subprocess.Popen[str], data: str) -> None:
    if process.stdin is None:
        return
    try:
        process.stdin.write(data)
        process.stdin.close()
    except OSError:
        pass


def spawn(argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start a long-running program detached from this process; its output goes to ``log_path``."""
    command = [which(argv[0]), *argv[1:]]
    log.debug("starting %s", shown_command(argv))
    with log_path.open("ab") as output:
        try:
            process = subprocess.Popen(
                command,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise RuntimeFailure(f"cannot start {argv[0]}: {exc.strerror}") from None
    return process.pid
