"""``image-builder registry start|stop|status``: a local Distribution registry (Debian's
``docker-registry``) on loopback, with its data under the user's data directory."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from image_builder import proc
from image_builder.errors import InputError, RuntimeFailure
from image_builder.oci import is_loopback, split_host
from image_builder.registry import ping

DEFAULT_ADDRESS = "127.0.0.1:5000"


@dataclass(frozen=True, kw_only=True)
class RegistryState:
    running: bool
    address: str | None
    pid: int | None
    data_dir: Path


def data_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/root")) / ".local" / "share")
    return Path(base) / "image-builder" / "registry"


def check_address(address: str) -> str:
    _, port = split_host(address)
    if port is None or not 0 < port < 65536:
        raise InputError(f"--address {address!r}: expected host:port, e.g. {DEFAULT_ADDRESS}")
    if not is_loopback(address):
        raise InputError(
            f"--address {address!r} is not a loopback address; the embedded registry has no "
            "authentication, so it only listens on 127.0.0.1, [::1] or localhost"
        )
    return address


def status(env: Mapping[str, str]) -> RegistryState:
    folder = data_dir(env)
    pid = _read_pid(folder)
    address = (folder / "address").read_text().strip() if (folder / "address").exists() else None
    if pid is not None and not _alive(pid):
        pid = None
    running = pid is not None and address is not None and _serving(pid, address)
    return RegistryState(running=running, address=address, pid=pid, data_dir=folder)


def start(
    env: Mapping[str, str], address: str = DEFAULT_ADDRESS, wait: float = 15.0
) -> RegistryState:
    check_address(address)
    folder = data_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    # Two `registry start` at once must give one registry: the second waits here, then finds
    # the first one running.
    with (folder / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _start_locked(env, address, wait)


def _start_locked(env: Mapping[str, str], address: str, wait: float) -> RegistryState:
    current = status(env)
    if current.running:
        if current.address != address:
            raise InputError(
                f"the embedded registry already runs on {current.address}; stop it first "
                "(image-builder registry stop)"
            )
        return current
    _check_free(address)
    folder = current.data_dir
    (folder / "data").mkdir(parents=True, exist_ok=True)
    config = folder / "config.yml"
    # Quoted as JSON strings, which YAML reads too: a bare [::1]:5000 is not valid YAML.
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {json.dumps(str(folder / 'data'))}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {json.dumps(address)}\n"
    )
    (folder / "address").write_text(address + "\n")
    # docker-registry reads every REGISTRY_* variable as a config override; buildah users often
    # have REGISTRY_AUTH_FILE set, which would make it refuse to start.
    clean = {k: v for k, v in env.items() if not k.startswith("REGISTRY_")}
    pid = proc.spawn(
        ["docker-registry", "serve", str(config)], log_path=folder / "registry.log", env=clean
    )
    (folder / "pid").write_text(f"{pid}\n")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _serving(pid, address, timeout=0.5):
            return RegistryState(running=True, address=address, pid=pid, data_dir=folder)
        if not _alive(pid):
            break
        time.sleep(0.1)
    tail = _tail(folder / "registry.log")
    stop(env)
    raise RuntimeFailure(f"the embedded registry did not start on {address}: {tail or 'no output'}")


def stop(env: Mapping[str, str], wait: float = 10.0) -> bool:
    """Stop the registry; ``False`` if it was not running."""
    folder = data_dir(env)
    pid = _read_pid(folder)
    (folder / "pid").unlink(missing_ok=True)
    if pid is None or not _alive(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def _serving(pid: int, address: str, timeout: float = 2.0) -> bool:
    """Whether the registry process ``pid`` answers on ``address``. A ping alone does not tell:
    another server may hold the port (taken since :func:`_check_free`, or after a reboot)."""
    return _listens(pid, _port(address)) and ping(f"http://{address}", timeout=timeout)


def _port(address: str) -> int:
    return split_host(address)[1] or 0


def _check_free(address: str) -> None:
    """Fail if another process listens on ``address`` (on any address ``localhost`` names)."""
    host = split_host(address)[0]
    try:
        found = socket.getaddrinfo(host, _port(address), type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # docker-registry will say what is wrong with the address
    for family, kind, protocol, _, sockaddr in found:
        with socket.socket(family, kind, protocol) as probe:
            # A connection in TIME_WAIT does not stop docker-registry (Go sets SO_REUSEADDR), so
            # it must not stop the probe either: with it, only a listener makes bind fail.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise RuntimeFailure(
                        f"another process already listens on {address}; choose another "
                        "--address, or stop that process"
                    ) from None


def _listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` itself holds a listening TCP socket on ``port``, IPv4 or IPv6."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # sl, local address:port (hex), remote, state, ..., inode
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                listening.add(f"socket:[{fields[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    return any(_link(fd) in listening for fd in fds)


def _link(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:  # the fd closed meanwhile
        return ""


def _read_pid(folder: Path) -> int | None:
    try:
        text = (folder / "pid").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdecimal() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
