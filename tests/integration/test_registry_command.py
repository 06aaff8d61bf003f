from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import Cli, free_port


def test_start_status_stop(cli: Cli, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
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
