"""Integration tests drive the real programs: the console script, buildah, the Distribution
registry and skopeo. Each session starts its own registries on free loopback ports and keeps
buildah's storage in a temporary folder, so nothing touches the machine's own state."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import CI_VARIABLES, EVENTS, leaks
from tests.support.fake_aad import FakeAad
from tests.support.fake_ado import FakeAdo
from tests.support.oidc import FakeIssuer
from tests.support.pki import CA
from tests.support.token_server import TokenAuth

HERE = Path(__file__).parent
REPO = HERE.parent.parent
TOOLS = ("buildah", "docker-registry", "skopeo", "qemu-aarch64-static")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _tools_present() -> None:
    """A missing tool fails loudly: CI must never pass by skipping the real thing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"missing {', '.join(missing)}: run scripts/setup"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Registry:
    """A real Distribution registry on a loopback port, which tests may stop and start."""

    root: Path
    port: int = field(default_factory=free_port)
    read_only: bool = False
    htpasswd: Path | None = None  # basic auth with these users
    token_auth: TokenAuth | None = None  # Bearer tokens from this token service
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        readonly = "  maintenance:\n    readonly:\n      enabled: true\n" if self.read_only else ""
        auth = (
            f"auth:\n  htpasswd:\n    realm: test\n    path: {self.htpasswd}\n"
            if self.htpasswd
            else ""
        )
        if self.token_auth:
            token = self.token_auth
            auth = (
                f"auth:\n  token:\n    realm: {token.realm}\n    service: {token.service}\n"
                f"    issuer: {token.issuer}\n    rootcertbundle: {token.rootcertbundle}\n"
            )
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n"
            f"  delete:\n    enabled: true\n{readonly}{auth}"
            f"http:\n  addr: {self.address}\n"
        )
        with (self.root / "registry.log").open("ab") as log:
            self.process = subprocess.Popen(
                ["docker-registry", "serve", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=1):
                    return
            except urllib.error.HTTPError as exc:
                if exc.code == 401:  # up, and asking for credentials
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        raise AssertionError(f"registry on {self.address} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self, *, read_only: bool) -> None:
        self.stop()
        self.read_only = read_only
        self.start()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    server = Registry(tmp_path_factory.mktemp("registry"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def issuer() -> Iterator[FakeIssuer]:
    """A local OIDC issuer (GitHub's token service) that mints the tests' tokens."""
    with FakeIssuer() as server:
        yield server


@pytest.fixture(scope="session")
def storage_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """buildah storage for the whole session, away from the machine's own."""
    return make_storage_conf(tmp_path_factory.mktemp("storage"))


def make_storage_conf(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "storage.conf"
    conf.write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{folder / "root"}"\n'
        f'runroot = "{folder / "run"}"\n'
    )
    return conf


# The clients honour proxies from the environment; the tests' servers are all on loopback.
PROXY_VARIABLES = {
    name
    for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
    for name in (base, base.lower())
}


def tool_env(storage: Path, home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in CI_VARIABLES and k not in PROXY_VARIABLES
    }
    env.update(CONTAINERS_STORAGE_CONF=str(storage), HOME=str(home), NO_COLOR="1")
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def base_image(
    registry: Registry, storage_conf: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    ref = f"{registry.address}/base/busybox:latest"
    home = tmp_path_factory.mktemp("home")
    done = subprocess.run(
        [str(REPO / "scripts" / "make-busybox-base"), ref],
        env=tool_env(storage_conf, home),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return ref


# --- secrets must never leak ---------------------------------------------------------------------

SECRETS: set[str] = set()  # every secret a test hands to the tool
# (where, text, whether GitHub consumes ::add-mask:: there) of everything the tool printed or wrote
OUTPUTS: list[tuple[str, str, bool]] = []
PLANTED_ENV: dict[str, str] = {}  # secrets planted in every run's environment


def secret(value: str) -> str:
    """Register ``value`` as a secret that must never appear in any output; returns it."""
    SECRETS.add(value)
    return value


def record(where: str, text: str, *, directives: bool = False) -> None:
    """``directives``: a GitHub step's log, where the runner consumes ``::add-mask::`` lines."""
    OUTPUTS.append((where, text, directives))


@pytest.fixture(scope="session", autouse=True)
def _no_secret_leaks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Plant a registry password in an auth file every CLI run reads, then, after the whole
    session, check every captured stdout, stderr, report and GitHub output file for every secret
    the tests used (tokens, keys, passwords, client secrets)."""
    import base64

    password = secret("planted-registry-password-3f9a1c")
    auth = tmp_path_factory.mktemp("auth") / "auth.json"
    encoded = base64.b64encode(f"robot:{password}".encode()).decode()
    auth.write_text(json.dumps({"auths": {"registry.invalid:5000": {"auth": encoded}}}))
    PLANTED_ENV["REGISTRY_AUTH_FILE"] = str(auth)
    secret(encoded)
    yield
    found = [
        f"{where}: {line[:200]}"
        for where, text, directives in OUTPUTS
        for value in SECRETS
        for line in leaks(value, text, directives=directives)
    ]
    stats = os.environ.get("IB_RELIABILITY_STATS")
    if stats:  # figures for docs/reliability.md; one file per xdist worker
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        Path(f"{stats}.{worker}" if worker else stats).write_text(
            json.dumps(
                {"secrets": len(SECRETS), "outputs_scanned": len(OUTPUTS), "leaks": len(found)}
            )
        )
    assert not found, "secrets leaked:\n" + "\n".join(found)


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        begin, end = "---IMAGE BUILD REPORT---\n", "\n---END OF IMAGE BUILD REPORT---"
        assert begin in self.stdout, self.stdout + self.stderr
        text = self.stdout.split(begin, 1)[1].split(end, 1)[0]
        data = json.loads(text)
        assert isinstance(data, dict)
        return data


@dataclass
class Cli:
    """Runs ``python -m image_builder`` with the session's storage and a clean CI environment."""

    storage: Path
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        timeout: float = 600,
    ) -> Run:
        started = self.start(*args, env=env, cwd=cwd)
        return started.finish(timeout)

    def start(
        self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> Started:
        """The CLI running in the background, for tests that act while it runs."""
        full_env = tool_env(self.storage, self.home, **{**PLANTED_ENV, **self.env, **(env or {})})
        args, cwd = as_checkout(args, cwd)
        process = subprocess.Popen(
            [sys.executable, "-m", "image_builder", *args],
            env=full_env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return Started(process, args, full_env)


class Started:
    """A running CLI whose stdout and stderr are read as they come."""

    def __init__(
        self, process: subprocess.Popen[str], args: tuple[str, ...], env: Mapping[str, str]
    ) -> None:
        self.process = process
        self.args = args
        self.env = env
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(process.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(process.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        for line in stream or ():
            into.append(line)

    def wait_for(self, text: str, timeout: float = 300) -> None:
        """Until ``text`` appears on stderr; fails if the CLI ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while text not in "".join(self.err):
            assert self.process.poll() is None, f"ended before {text!r}:\n{''.join(self.err)}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{''.join(self.err)}"
            time.sleep(0.05)

    def finish(self, timeout: float = 600) -> Run:
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the CLI did not end within {timeout} s") from None
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        stdout, stderr = "".join(self.out), "".join(self.err)
        where = " ".join(self.args[:2])
        record(f"{where} stdout", stdout)
        record(f"{where} stderr", stderr, directives=True)
        files = [self.env.get("GITHUB_OUTPUT"), self.env.get("GITHUB_STEP_SUMMARY")]
        if "--build-report-path" in self.args:
            files.append(self.args[self.args.index("--build-report-path") + 1])
        for name in files:
            if name and Path(name).is_file():
                record(f"{where} {name}", Path(name).read_text(errors="replace"))
        return Run(self.process.returncode, stdout, stderr)


@pytest.fixture
def cli(storage_conf: Path, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(storage=storage_conf, home=home)


def as_checkout(args: tuple[str, ...], cwd: Path | None) -> tuple[tuple[str, ...], Path | None]:
    """Tests keep their contexts in temporary folders; run the CLI from the folder holding the
    context, as from a checkout, since the context must be a path inside the checkout."""
    if cwd is not None or "--context" not in args:
        return args, cwd
    at = args.index("--context") + 1
    context = Path(args[at])
    if not context.is_absolute():
        return args, cwd
    return (*args[:at], context.name, *args[at + 1 :]), context.parent


REGISTRY_PASSWORD = secret("registry-robot-password-9d2e")


def bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324 - bcrypt, what htpasswd wants


@pytest.fixture
def private_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry that wants basic auth: user robot, password REGISTRY_PASSWORD."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"robot:{bcrypt(REGISTRY_PASSWORD)}\n")
    server = Registry(tmp_path / "private", htpasswd=htpasswd)
    server.start()
    yield server
    server.stop()


def auth_file(path: Path, host: str, password: str) -> Path:
    """An auth.json for robot at ``host``; its encoded credential is a secret."""
    encoded = secret(base64.b64encode(f"robot:{password}".encode()).decode())
    path.write_text(json.dumps({"auths": {host: {"auth": encoded}}}))
    return path


# The caller's OIDC token, as a GitHub job hands it to the Azure DevOps backend.
CALLER_TOKEN = secret("header.payload.signature-of-the-caller")


def service_principal(tmp_path: Path, uses: int) -> tuple[FakeAad, FakeAdo, dict[str, str]]:
    """A service principal with (a local fake of) Entra ID, whose tokens the fake Azure DevOps
    accepts ``uses`` times each, and the environment of a GitHub push job that uses it."""
    ca = CA()
    client_secret = secret("planted-sp-secret-9c1e")
    aad = FakeAad(
        ca, tmp_path, client_id="sp-client", client_secret=client_secret,
        access_token=secret("aad-token-for-ado-31f0"),
    ).start()  # fmt: skip
    server = FakeAdo(aad.valid(uses)).start()
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": "push",
        "GITHUB_EVENT_PATH": str(EVENTS / "push.new-branch.json"),
        "AUTHORIZATION": CALLER_TOKEN,
        "AZURE_DEVOPS_EXT_PAT": "",
        "AZURE_CLIENT_ID": "sp-client",
        "AZURE_CLIENT_SECRET": client_secret,
        "AZURE_TENANT_ID": "my-tenant",
        "AZURE_AUTHORITY_HOST": aad.url,
        "REQUESTS_CA_BUNDLE": str(ca.write(tmp_path)),
    }
    return aad, server, env


def keygen(cli: Cli, prefix: Path, password: str) -> tuple[Path, Path]:
    """A cosign key pair made by `image-builder keygen`; the private key's text is a secret."""
    run = cli("keygen", "--output-key-prefix", str(prefix), env={"COSIGN_PASSWORD": password})
    assert run.returncode == 0, run.stderr
    paths = json.loads(run.stdout)
    secret(Path(paths["private_key"]).read_text().splitlines()[1])
    return Path(paths["private_key"]), Path(paths["public_key"])


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, check=False)


def inspect_raw(ref: str) -> dict[str, Any] | None:
    """The manifest (or index) at ``ref``, or ``None`` if the registry does not have it."""
    done = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")
    if done.returncode != 0:
        return None
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def everything_pushed(ref: str, into: Path) -> bytes:
    """Every blob of the pushed image (layers decompressed), its config with the history, and
    the manifest: the bytes a secret could hide in."""
    done = skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"dir:{into}")
    assert done.returncode == 0, done.stderr
    data = b""
    for blob in sorted(into.iterdir()):
        raw = blob.read_bytes()
        with contextlib.suppress(OSError, EOFError, zlib.error):
            raw = gzip.decompress(raw)
        data += raw
    return data


def assert_nowhere(value: str, run: Run, pushed: bytes) -> None:
    """``value`` is in no output of ``run`` (but ``::add-mask::``, which GitHub consumes), not in
    its report, and not in the ``pushed`` image's bytes."""
    assert leaks(value, run.stdout, run.stderr) == []
    assert value.encode() not in pushed
    assert value not in json.dumps(run.report)


def manifest_digest(ref: str) -> str | None:
    done = skopeo(
        "inspect", "--tls-verify=false", "--no-tags", "--format", "{{.Digest}}", f"docker://{ref}"
    )
    return done.stdout.strip() if done.returncode == 0 else None


def image_config(ref: str, arch: str | None = None) -> dict[str, Any]:
    args = ["inspect", "--tls-verify=false", "--config"]
    if arch:
        args += ["--override-arch", arch]
    done = skopeo(*args, f"docker://{ref}")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert isinstance(data, dict)
    return data


def read_file(ref: str, path: str, storage: Path, home: Path, platform: str = "linux/amd64") -> str:
    """Pull ``ref`` for ``platform`` with buildah and read ``path`` out of its filesystem."""
    env = tool_env(storage, home)
    ctr = subprocess.run(
        ["buildah", "from", "--quiet", "--tls-verify=false", "--platform", platform, ref],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        mount = subprocess.run(
            ["buildah", "mount", ctr], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        return (Path(mount) / path.lstrip("/")).read_text()
    finally:
        subprocess.run(["buildah", "rm", ctr], env=env, capture_output=True, check=False)
