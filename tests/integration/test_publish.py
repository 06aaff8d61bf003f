"""Publishing under load and faults, with real buildah, skopeo and registries: content first and
tags second, race-safe shared tags, deadlines, signals, and a report that is never lost."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import (
    Cli,
    Registry,
    Run,
    inspect_raw,
    manifest_digest,
    tool_env,
)
from tests.support.inputs import config, context, github

PUSH = github("push", "push.new-branch.json")


def build(name: str, ctx: Path, cfg: str, *extra: str) -> tuple[str, ...]:
    return ("build", "--name", name, "--context", str(ctx), "--config", cfg, *extra)


@pytest.fixture
def registries(tmp_path: Path) -> Iterator[list[Registry]]:
    servers = [Registry(tmp_path / f"registry-{n}") for n in range(3)]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


def test_five_builds_sharing_the_default_tag_each_land_their_own_tag(
    cli: Cli,
    registry: Registry,
    base_image: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """Five contexts built from one commit share the default tag v<date>-<sha8> and each has a
    tag of its own. A proxy holds every read of the shared tag until all five have written it,
    so each build's read-back comes after every write: the race at its worst. Every build
    succeeds; its own tag holds its digest; the shared tag holds one of them, and only that
    build's report claims it; the four others report it superseded, naming the winner."""
    from tests.support.fault_proxy import FaultProxy

    proxy = FaultProxy(registry.address).start()
    request.addfinalizer(proxy.stop)
    cfg = config(tmp_path, f"registry: {proxy.address}/race\n")

    def one(n: int) -> Run:
        ctx = context(tmp_path / f"c{n}", f"FROM {base_image}\nCOPY a /a\n", a=f"build {n}\n")
        return cli(*build("team/shared", ctx, cfg, "--tag", f"own-{n}"), env=PUSH)

    (tmp_path / "c0").mkdir()
    for n in range(1, 5):
        (tmp_path / f"c{n}").mkdir()
    (tmp_path / "dry").mkdir()
    dry = context(tmp_path / "dry", "FROM scratch\n")
    plan = json.loads(cli(*build("team/shared", dry, cfg, "--dry-run"), env=PUSH).stdout)
    shared_tag = plan["tags"][0]["value"]
    proxy.faults.hold_reads = (f"/manifests/{shared_tag}", 5)
    with ThreadPoolExecutor(max_workers=5) as pool:
        runs = list(pool.map(one, range(5)))
    reports = [run.report for run in runs]
    for n, (run, report) in enumerate(zip(runs, reports, strict=True)):
        assert run.returncode == 0, run.stderr
        assert report["status"] == "Succeeded"
        own = f"{proxy.address}/race/team/shared:own-{n}"
        assert own in report["images_list"]
        assert manifest_digest(own.replace(proxy.address, registry.address)) == report["digest"]
        assert report["tags"][-1] == shared_tag
    shared = f"{proxy.address}/race/team/shared:{shared_tag}"
    holder = manifest_digest(shared.replace(proxy.address, registry.address))
    digests = {r["digest"] for r in reports}
    assert len(digests) == 5
    assert holder in digests
    [winner] = [r for r in reports if shared in r["images_list"]]
    assert winner["digest"] == holder
    for report in reports:
        if report is not winner:
            assert report["superseded_images"] == [{"image": shared, "digest": holder}]


def test_atomic_publish_with_one_of_three_registries_down(
    cli: Cli, registries: list[Registry], base_image: str, tmp_path: Path
) -> None:
    registries[1].stop()
    cfg = config(
        tmp_path,
        f"registry: [{', '.join(r.address + '/a' for r in registries)}]\npublish-timeout: 15s\n",
    )
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="atomic\n")
    run = cli(*build("team/atomic", ctx, cfg, "--tag", "t1"), env=PUSH)
    assert run.returncode == 1
    report = run.report
    assert (report["status"], report["pushed"], report["images_list"]) == ("Failed", False, [])
    assert len(report["failed_images"]) == 6
    for failed in report["failed_images"]:
        assert inspect_raw(failed["image"]) is None, f"{failed['image']} moved"
    # The registry that is down is found before the build: nothing is built or stored anywhere.
    assert (report["digest"], report["stored_in"]) == (None, [])
    down = registries[1].address
    assert report["error"] == (
        f"registry {down} is unreachable (connection refused); check registry in config.yaml, "
        f"or start it (image-builder registry start --address {down})"
    )
    assert "STEP 1" not in run.stderr

    registries[1].start()
    rerun = cli(*build("team/atomic", ctx, cfg, "--tag", "t1"), env=PUSH)
    assert rerun.returncode == 0, rerun.stderr
    assert len(rerun.report["images_list"]) == 6


def test_a_layout_with_uncompressed_layers_is_compressed_once_and_published(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """``--from-layout`` of a layout whose layers are not compressed (what --layout-out wrote
    before the build compressed them): its digest is not the pushed one, so it is compressed
    once first, and every registry gets that one digest."""
    env = tool_env(cli.storage, cli.home)
    (tmp_path / "a").write_text("a layer of our own\n")
    box = subprocess.run(
        ["buildah", "from", "-q", "--tls-verify=false", base_image],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(["buildah", "copy", "-q", box, str(tmp_path / "a"), "/a"], env=env, check=True)
    layout = tmp_path / "layout"
    # commit (not push) keeps its layers uncompressed, as the old --layout-out's bud did
    subprocess.run(
        ["buildah", "commit", "-q", "--rm", box, f"oci:{layout}:image"], env=env, check=True
    )
    index = json.loads((layout / "index.json").read_text())
    top = json.loads(
        (layout / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
    )
    assert not top["layers"][-1]["mediaType"].endswith("gzip")
    cfg = config(tmp_path, f"registry: {registry.address}/layout\n")
    ctx = context(tmp_path, f"FROM {base_image}\n")
    run = cli(*build("team/layout", ctx, cfg, "--from-layout", str(layout)), env=PUSH)
    assert run.returncode == 0, run.stderr
    pushed = inspect_raw(run.report["images_list"][0])
    assert pushed is not None
    assert all(layer["mediaType"].endswith("tar+gzip") for layer in pushed["layers"])
    assert run.report["digest"] != index["manifests"][0]["digest"]


class Silent:
    """A server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_registry_that_never_answers_fails_the_build_with_a_report_at_the_deadline(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    silent = Silent()
    try:
        cfg = config(
            tmp_path,
            f"registry: [{registry.address}/ok, {silent.address}/silent]\npublish-timeout: 10s\n",
        )
        ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="silent\n")
        run = cli(*build("team/silent", ctx, cfg), env=PUSH, timeout=120)
    finally:
        silent.close()
    assert run.returncode == 1
    report = run.report
    assert report["status"] == "Failed"
    errors = {f["image"].split("/")[0]: f["error"] for f in report["failed_images"]}
    assert "did not finish within" in errors[silent.address]
    assert inspect_raw(f"{registry.address}/ok/team/silent:{report['tags'][0]}") is None


def test_a_held_storage_lock_is_named_and_given_up_at_the_lock_timeout(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    """``--no-push`` keeps the image in the machine's buildah storage, which another process may
    hold locked: the build says who holds it, then gives up at lock-timeout with a report."""
    graphroot = cli.storage.parent / "root"
    cfg = config(tmp_path, f"registry: {registry.address}/lock\nlock-timeout: 6s\n")
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="lock\n")
    graphroot.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            "python3",
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(graphroot / 'storage.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        run = cli(*build("team/locked", ctx, cfg, "--no-push"), env=PUSH, timeout=300)
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert run.returncode == 1
    lock = graphroot / "storage.lock"
    assert f"waiting for buildah's storage lock: {lock} is locked by process {holder.pid}" in (
        run.stderr
    )
    assert run.report["status"] == "Failed"
    assert (
        f"buildah's storage lock ({lock}) stayed locked by process {holder.pid} (python3)"
        in run.report["error"]
    )
    assert "(lock-timeout)" in run.report["error"]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_mid_push_stops_skopeo_reports_cancelled_and_leaves_nothing(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    from tests.support.fault_proxy import FaultProxy

    proxy = FaultProxy(registry.address).start()
    proxy.faults.delay = 1.0  # every request of the push takes a second
    try:
        cfg = config(tmp_path, f"registry: {proxy.address}/slow\n")
        ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="sigterm\n")
        before = set(_work_folders())
        started = cli.start(*build("team/term", ctx, cfg, "--tag", "t"), env=PUSH)
        started.wait_for("phase 1:")
        end = time.monotonic() + 30  # skopeo starts right after phase 1 is announced
        while not any(n == "skopeo" for _, n in _descendants(started.process.pid)):
            assert time.monotonic() < end, _descendants(started.process.pid)
            time.sleep(0.1)
        children = _descendants(started.process.pid)
        mine = set(_work_folders()) - before
        assert mine
        started.process.send_signal(sig)
        run = started.finish(timeout=60)
    finally:
        proxy.stop()
    assert run.returncode == code
    report = run.report
    assert report["status"] == "Cancelled"
    assert report["error"].startswith(f"cancelled ({sig.name})")
    assert report["images_list"] == []
    assert f"stopped by {sig.name}" in run.stderr
    for pid, name in children:
        assert not _alive(pid), f"{name} ({pid}) still runs after image-builder ended"
    assert inspect_raw(f"{registry.address}/slow/team/term:t") is None
    assert _gone(mine), "the cancelled build left its work folder behind"


def test_a_killed_build_is_swept_by_the_next_run(
    cli: Cli, registry: Registry, base_image: str, tmp_path: Path
) -> None:
    cfg = config(tmp_path, f"registry: {registry.address}/sweep\n")
    ctx = context(tmp_path, f"FROM {base_image}\nRUN sleep 30\n")
    before = set(_work_folders())
    started = cli.start(*build("team/killed", ctx, cfg), env=PUSH)
    started.wait_for("RUN sleep")
    started.process.kill()  # SIGKILL: no chance to clean up
    started.finish(timeout=60)
    left = set(_stale_work_folders()) - before
    assert left, "the killed build left no work folder to sweep"
    (tmp_path / "next").mkdir()
    ctx2 = context(tmp_path / "next", f"FROM {base_image}\nCOPY a /a\n", a="next\n")
    run = cli(*build("team/next", ctx2, cfg), env=PUSH)
    assert run.returncode == 0, run.stderr
    assert "work folder(s) that earlier, stopped runs left behind" in run.stderr
    assert _gone(left)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("disk", ["read-only", "full"])
def test_a_report_path_on_a_read_only_or_full_disk_is_refused_before_the_build(
    cli: Cli, registry: Registry, small_disk: Path, tmp_path: Path, disk: str
) -> None:
    if disk == "full":
        _fill(small_disk)
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    cfg = config(tmp_path, f"registry: {registry.address}/{disk}\n")
    ctx = context(tmp_path, "FROM scratch\nCOPY a /a\n", a="x\n")
    report = small_disk / "report.json"
    run = cli(*build("team/disk", ctx, cfg, "--build-report-path", str(report)), env=PUSH)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"::error::--build-report-path {report} cannot be written: the disk mounted at "
        f"{small_disk} is {disk}; choose a writable place"
    )
    assert "::group::build " not in run.stderr  # refused before the build


def test_a_full_disk_under_layout_out_is_named(
    cli: Cli, base_image: str, small_disk: Path, tmp_path: Path
) -> None:
    _fill(small_disk)
    ctx = context(tmp_path, f"FROM {base_image}\nCOPY a /a\n", a="x" * 100_000)
    out = small_disk / "layout"
    run = cli(*build("team/stage", ctx, config(tmp_path, ""), "--layout-out", str(out)), env=PUSH)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1] == (
        f"::error::cannot write the image layout to {out}: the disk mounted at {small_disk} is full"
    )


def test_a_disk_that_fills_during_the_build_loses_no_output(
    cli: Cli, registry: Registry, base_image: str, small_disk: Path, tmp_path: Path
) -> None:
    """The report path passed its check, then the disk filled up while the image was built:
    the report still goes to stdout and the GitHub outputs, and the message names the disk."""
    cfg = config(tmp_path, f"registry: {registry.address}/fills\n")
    ctx = context(tmp_path, f"FROM {base_image}\nRUN sleep 3\n")
    report = small_disk / "report.json"
    outputs = tmp_path / "github-output"
    env = {**PUSH, "GITHUB_OUTPUT": str(outputs)}
    started = cli.start(*build("team/fills", ctx, cfg, "--build-report-path", str(report)), env=env)
    started.wait_for("RUN sleep")
    _fill(small_disk)
    run = started.finish()
    assert run.returncode == 1
    assert run.report["status"] == "Succeeded"
    assert run.report["digest"] in outputs.read_text()
    assert (
        f"cannot write the build report to {report}: the disk mounted at {small_disk} is full"
        in run.stderr
    )
    assert "internal error" not in run.stderr


def _fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def _descendants(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True, text=True)
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.stdout.splitlines():
        number, parent, name = line.split(None, 2)
        children.setdefault(int(parent), []).append((int(number), name.strip()))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _work_folders() -> list[Path]:
    import tempfile

    return sorted(Path(tempfile.gettempdir()).glob("image-builder-work-*"))


def _stale_work_folders() -> list[Path]:
    """Work folders that no live process holds."""
    stale = []
    for path in _work_folders():
        lock = path / ".lock"
        if not path.is_dir() or not lock.exists():
            continue
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            stale.append(path)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
    return stale


def _gone(folders: set[Path], wait: float = 30) -> bool:
    """Whether ``folders`` are gone (removal runs in the background)."""
    deadline = time.monotonic() + wait
    while any(folder.exists() for folder in folders):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
