from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.integration.conftest import Cli, free_port
from tests.support.fake_server import FakeServer
from tests.support.replies import QuietHandler, reply


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]", "localhost"])
def test_start_status_stop(cli: Cli, tmp_path: Path, host: str) -> None:
    address = f"{host}:{free_port()}"
    data = tmp_path / "xdg"
    env = {"XDG_DATA_HOME": str(data)}
    assert cli("registry", "status", env=env).returncode == 1
    started = cli("registry", "start", "--address", address, env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == (
        f"registry running on {address} (data in {data / 'image-builder' / 'registry'})"
    )
    try:
        again = cli("registry", "start", "--address", address, env=env)
        assert again.returncode == 0  # already running: nothing to do
        status = cli("registry", "status", env=env)
        assert status.returncode == 0
        assert f"registry running on {address}" in status.stdout
    finally:
        stopped = cli("registry", "stop", env=env)
    assert stopped.stdout.strip() == "registry stopped"
    after = cli("registry", "status", env=env)
    assert after.returncode == 1
    assert "registry not running; start it with: image-builder registry start" in after.stdout


def test_refuses_a_public_address(cli: Cli) -> None:
    run = cli("registry", "start", "--address", "0.0.0.0:5000")
    assert run.returncode == 2
    assert run.stderr.startswith("error: --address '0.0.0.0:5000' is not a loopback address")


def test_registry_start_ignores_registry_auth_file(cli: Cli, tmp_path: Path) -> None:
    """Defect found by the leak suite: docker-registry took REGISTRY_AUTH_FILE (buildah's auth
    file variable) as a config override and refused to start."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
    }
    started = cli("registry", "start", "--address", address, env=env)
    try:
        assert started.returncode == 0, started.stderr
    finally:
        cli("registry", "stop", env=env)


class _AnswersV2(QuietHandler, BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        reply(self, 200, {})


@contextlib.contextmanager
def another_server(host: str) -> Iterator[str]:
    """Another program's HTTP server on a free port of ``host``, answering ``/v2/`` with 200 as
    a registry does; yields its address."""
    with FakeServer(_AnswersV2, host=host) as server:
        yield server.address


@pytest.mark.parametrize("host", ["127.0.0.1", "[::1]"], ids=["ipv4", "ipv6"])
def test_registry_start_on_a_taken_port_fails_and_says_so(
    cli: Cli, tmp_path: Path, host: str
) -> None:
    """Defect: the readiness check was answered by the server already on the port, so `start`
    said "registry running" while its own registry had died with "address already in use"."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    with another_server(host) as address:
        started = cli("registry", "start", "--address", address, env=env)
        status = cli("registry", "status", env=env)
    assert started.returncode == 1, started.stdout
    assert started.stderr == (
        f"error: another process already listens on {address}; choose another --address, "
        "or stop that process\n"
    )
    assert status.returncode == 1
    assert "registry not running" in status.stdout


# Stands in for docker-registry: another server takes the port (in a child, so this pid never
# holds it), then the real docker-registry starts on the same pid and cannot listen.
_RACING_REGISTRY = """\
#!{python}
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Answers(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

ready, tell = os.pipe()
child = os.fork()
if child == 0:
    server = HTTPServer(("127.0.0.1", {port}), Answers)
    os.write(tell, b".")
    server.serve_forever()
os.close(tell)
os.read(ready, 1)
with open({pid_file!r}, "w") as out:
    out.write(str(child))
os.execv({real!r}, sys.argv)
"""


def test_registry_start_fails_when_another_server_takes_the_port_first(
    cli: Cli, tmp_path: Path
) -> None:
    """The race the check before spawning cannot close: another server takes the port between
    that check and the registry's own listen."""
    port = free_port()
    other = tmp_path / "other.pid"
    shim = tmp_path / "bin" / "docker-registry"
    shim.parent.mkdir()
    real = shutil.which("docker-registry")
    shim.write_text(
        _RACING_REGISTRY.format(python=sys.executable, port=port, pid_file=str(other), real=real)
    )
    shim.chmod(0o755)
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    try:
        started = cli("registry", "start", "--address", f"127.0.0.1:{port}", env=env)
        status = cli("registry", "status", env=env)
    finally:
        if other.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(other.read_text()), signal.SIGTERM)
    assert started.returncode == 1, started.stdout
    assert started.stderr.startswith(
        f"error: the embedded registry did not start on 127.0.0.1:{port}: "
    )
    assert "address already in use" in started.stderr
    assert status.returncode == 1
    assert "registry not running" in status.stdout


def test_registry_status_does_not_vouch_for_another_server(cli: Cli, tmp_path: Path) -> None:
    """As after a reboot: the recorded pid now belongs to another program, and another server
    answers on the recorded address."""
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    folder = tmp_path / "xdg" / "image-builder" / "registry"
    folder.mkdir(parents=True)
    with another_server("127.0.0.1") as address, subprocess.Popen(["sleep", "60"]) as unrelated:
        (folder / "address").write_text(f"{address}\n")
        (folder / "pid").write_text(f"{unrelated.pid}\n")
        try:
            status = cli("registry", "status", env=env)
        finally:
            unrelated.kill()
    assert status.returncode == 1
    assert "registry not running" in status.stdout
