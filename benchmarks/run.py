"""Image Builder against raw buildah, side by side, in one run.

    .venv/bin/python -m benchmarks.run [--rounds 3] [--quick] [--json out.json] [--markdown docs/performance.md]

It starts its own registries (Debian's docker-registry on free loopback ports), makes a busybox
base image, then runs every scenario for several rounds, alternating A and B, and reports the
median of each, the A/B ratio and the goal. ``--quick`` shrinks images and sleeps so the whole
thing takes seconds (the test suite's smoke test uses it); its timings mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "image-builder"
PUSH_EVENT = REPO / "tests" / "data" / "github-events" / "push.new-branch.json"


@dataclass
class Result:
    id: str
    title: str
    a_label: str
    b_label: str
    a_median: float
    b_median: float
    goal: str
    goal_ratio: float | None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.a_median / self.b_median if self.b_median else float("inf")

    @property
    def met(self) -> bool | None:
        return None if self.goal_ratio is None else self.ratio <= self.goal_ratio


def settle() -> None:
    """Wait (unmeasured) for Image Builder's background clean-up, so it never slows the next run."""
    for _ in range(100):
        busy = subprocess.run(
            ["pgrep", "-f", "rm -rf /.*/image-builder-[0-9a-f]{12}$"],
            capture_output=True,
            check=False,
        )
        if busy.returncode != 0:
            return
        time.sleep(0.05)


class Bench:
    def __init__(self, work: Path, rounds: int, quick: bool) -> None:
        self.work = work
        self.rounds = rounds
        self.quick = quick
        self.registries: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.counter = 0
        self.registries_conf = work / "registries.conf"

    # --- set-up -------------------------------------------------------------------------------

    def start_registry(self) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        root = self.work / f"registry-{port}"
        root.mkdir()
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        process = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        address = f"127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://{address}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        self.registries.append((address, process))
        with self.registries_conf.open("a") as conf:
            conf.write(f'[[registry]]\nlocation = "{address}"\ninsecure = true\n')
        return address

    def stop(self) -> None:
        for _, process in self.registries:
            process.terminate()
            process.wait()

    def fresh_storage(self) -> dict[str, str]:
        """Environment for a run with empty local storage (so every round starts equal)."""
        self.counter += 1
        folder = self.work / f"storage-{self.counter}"
        folder.mkdir()
        (folder / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{folder / "root"}"\nrunroot = "{folder / "run"}"\n'
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GITHUB_", "BUILD_BUILDID", "JENKINS_HOME"))
        }
        env.update(
            CONTAINERS_STORAGE_CONF=str(folder / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(self.registries_conf),
            GITHUB_ACTIONS="true",
            GITHUB_EVENT_NAME="push",
            GITHUB_EVENT_PATH=str(PUSH_EVENT),
            HOME=str(self.work),
        )
        return env

    def context(self, name: str, dockerfile: str, data_mb: float = 0) -> Path:
        root = self.work / f"ctx-{name}"
        root.mkdir(exist_ok=True)
        (root / "Dockerfile").write_text(dockerfile)
        if data_mb:
            (root / "data").write_bytes(os.urandom(int(data_mb * 1024 * 1024)))
        return root

    def config(self, name: str, text: str) -> Path:
        path = self.work / f"{name}.yaml"
        path.write_text(text)
        return path

    # --- measuring ----------------------------------------------------------------------------

    def run(self, argv: list[str], env: dict[str, str]) -> float:
        if "--context" in argv:  # the context is named relative to the checkout: the work folder
            at = argv.index("--context") + 1
            argv = [*argv[:at], str(Path(argv[at]).relative_to(self.work)), *argv[at + 1 :]]
        start = time.perf_counter()
        done = subprocess.run(
            argv, env=env, cwd=self.work, capture_output=True, text=True, check=False
        )
        elapsed = time.perf_counter() - start
        settle()
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} failed: {done.stderr[-2000:]}")
        return elapsed

    def pair(self, a: Callable[[], float], b: Callable[[], float]) -> tuple[float, float]:
        a_times, b_times = [], []
        for _ in range(self.rounds):  # alternate, so drift hits both sides alike
            a_times.append(a())
            b_times.append(b())
        return statistics.median(a_times), statistics.median(b_times)

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"bench/{prefix}{self.counter}"


def scenarios(bench: Bench) -> Iterator[Result]:
    reg = [bench.start_registry() for _ in range(3)]
    env = bench.fresh_storage()
    subprocess.run(
        [str(REPO / "scripts" / "make-busybox-base"), f"{reg[0]}/base/busybox:latest"],
        env=env,
        check=True,
        capture_output=True,
    )
    base = f"{reg[0]}/base/busybox:latest"
    quick = bench.quick

    # P1: orchestration overhead
    ctx = bench.context(
        "p1",
        f"FROM {base}\nRUN echo built > /built\nCOPY data /data\n",
        data_mb=0.2 if quick else 20,
    )
    cfg = bench.config("p1", f"registry: {reg[0]}\n")

    def ib_build() -> float:
        return bench.run(
            [
                str(BIN),
                "build",
                "--name",
                bench.name("p1ib"),
                "--context",
                str(ctx),
                "--config",
                str(cfg),
                "--tag",
                "t",
                "--platform",
                "linux/amd64",
            ],
            bench.fresh_storage(),
        )

    def raw_build() -> float:
        e = bench.fresh_storage()
        name = bench.name("p1raw")
        start = time.perf_counter()
        subprocess.run(
            [
                "buildah",
                "bud",
                "--isolation",
                "chroot",
                "--platform",
                "linux/amd64",
                "--format",
                "oci",
                "-t",
                "localhost/p1raw",
                str(ctx),
            ],
            env=e,
            check=True,
            capture_output=True,
        )
        for tag in ("v1", "t"):  # image-builder pushes the default tag and one more
            subprocess.run(
                [
                    "buildah",
                    "push",
                    "--tls-verify=false",
                    "localhost/p1raw",
                    f"docker://{reg[0]}/{name}:{tag}",
                ],
                env=e,
                check=True,
                capture_output=True,
            )
        return time.perf_counter() - start

    a, b = bench.pair(ib_build, raw_build)
    yield Result(
        "P1",
        "orchestration overhead (RUN + COPY 20 MB, 2 tags)",
        "image-builder build",
        "buildah bud + push",
        a,
        b,
        "≤ 1.10 (goal 1.05)",
        1.10,
    )

    # P2: no-change rebuild from the registry cache, local storage wiped
    sleep = 0 if quick else 5
    ctx2 = bench.context(
        "p2", f"FROM {base}\nRUN sleep {sleep} && echo done > /slow\nCOPY Dockerfile /Dockerfile\n"
    )

    def cold_and_warm() -> tuple[float, float]:
        cache = bench.name("cache")
        cfg2 = bench.config(
            f"p2-{bench.counter}",
            f"registry: {reg[0]}\ncache: {{enabled: true, cache-repo: {reg[0]}/{cache}}}\n",
        )
        argv = [
            str(BIN),
            "build",
            "--name",
            bench.name("p2"),
            "--context",
            str(ctx2),
            "--config",
            str(cfg2),
            "--platform",
            "linux/amd64",
        ]
        cold = bench.run(argv, bench.fresh_storage())
        warm = bench.run(argv, bench.fresh_storage())
        return warm, cold

    pairs = [cold_and_warm() for _ in range(bench.rounds)]
    yield Result(
        "P2",
        f"no-change rebuild, storage wiped, registry cache (RUN sleeps {sleep}s)",
        "warm rebuild",
        "cold build",
        statistics.median(p[0] for p in pairs),
        statistics.median(p[1] for p in pairs),
        "≤ 0.15",
        0.15,
    )

    # P3: fan-out to three registries
    ctx3 = bench.context("p3", f"FROM {base}\nCOPY data /data\n", data_mb=0.2 if quick else 20)
    three = bench.config("p3-three", f"registry: [{reg[0]}, {reg[1]}, {reg[2]}]\n")
    one = bench.config("p3-one", f"registry: {reg[0]}\n")

    def push_to(cfg: Path) -> Callable[[], float]:
        return lambda: bench.run(
            [
                str(BIN),
                "build",
                "--name",
                bench.name("p3"),
                "--context",
                str(ctx3),
                "--config",
                str(cfg),
                "--platform",
                "linux/amd64",
            ],
            bench.fresh_storage(),
        )

    a, b = bench.pair(push_to(three), push_to(one))
    yield Result(
        "P3",
        "fan-out: 3 registries vs 1 (COPY 20 MB)",
        "3 registries",
        "1 registry",
        a,
        b,
        "≤ 1.10",
        1.10,
    )

    # P4: multi-platform, COPY only; and what emulated RUN steps cost
    ctx4 = bench.context("p4", f"FROM {base}\nCOPY data /data\n", data_mb=0.2 if quick else 5)

    def platforms(value: str, context: Path) -> Callable[[], float]:
        return lambda: bench.run(
            [
                str(BIN),
                "build",
                "--name",
                bench.name("p4"),
                "--context",
                str(context),
                "--config",
                str(one),
                "--platform",
                value,
            ],
            bench.fresh_storage(),
        )

    a, b = bench.pair(platforms("linux/amd64,linux/arm64", ctx4), platforms("linux/amd64", ctx4))
    ctx4run = bench.context(
        "p4run",
        f"FROM {base}\nRUN for i in $(seq 1 {20 if quick else 2000}); do echo $i; done > /count\n",
    )
    ra, rb = bench.pair(
        platforms("linux/amd64,linux/arm64", ctx4run), platforms("linux/amd64", ctx4run)
    )
    yield Result(
        "P4",
        "multi-platform, COPY only",
        "amd64 + arm64",
        "amd64",
        a,
        b,
        "≤ 1.3",
        1.3,
        note=f"with an emulated RUN step: {ra:.2f}s vs {rb:.2f}s ({ra / rb:.2f}x)",
    )

    # P5: CLI latency
    env5 = bench.fresh_storage()

    def latency(argv: list[str]) -> float:
        times = []
        for _ in range(5 if quick else 21):
            start = time.perf_counter()
            subprocess.run(argv, env=env5, cwd=REPO, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - start
    tags = latency([str(BIN), "tags"])
    help_ = latency([str(BIN), "--help"])
    yield Result(
        "P5",
        "CLI latency: image-builder tags (push event)",
        "tags",
        "150 ms goal",
        tags,
        0.150,
        "≤ 150 ms",
        1.0,
        note=f"bare python start-up {bare * 1000:.0f} ms",
    )
    yield Result(
        "P5",
        "CLI latency: image-builder --help",
        "--help",
        "150 ms goal",
        help_,
        0.150,
        "≤ 150 ms",
        1.0,
    )

    # P6: signing 50 references
    yield from signing(bench, reg[0], base)


def signing(bench: Bench, registry: str, base: str) -> Iterator[Result]:
    sys.path.insert(0, str(REPO))
    from tests.support.fake_signify import FakeSignify
    from tests.support.pki import CA, write_signify_secret

    count = 50
    ctx = bench.context("p6", f"FROM {base}\nCOPY Dockerfile /Dockerfile\n")
    plain = bench.config("p6", f"registry: {registry}/sig\n")
    env = bench.fresh_storage()
    bench.run(
        [
            str(BIN),
            "build",
            "--name",
            "bench/p6",
            "--context",
            str(ctx),
            "--config",
            str(plain),
            "--tag",
            "t",
            "--platform",
            "linux/amd64",
        ],
        env,
    )
    refs = []
    for i in range(count):  # the same image in 50 repositories: 50 signatures for cosign
        ref = f"{registry}/sig/bench/p6-{i}:t"
        subprocess.run(
            [
                "skopeo",
                "copy",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
                f"docker://{registry}/sig/bench/p6:t",
                f"docker://{ref}",
            ],
            check=True,
            capture_output=True,
        )
        refs.append(ref)
    ca = CA()
    folder = bench.work / "signify"
    folder.mkdir()
    server = FakeSignify(ca, folder).start()
    try:
        cert, key = ca.pair("bench")
        secret = write_signify_secret(folder / "secret.json", cert, key)
        notary = bench.config(
            "p6-notary",
            (
                f"registry: {registry}/sig\nsign-config:\n  enabled-signers: {{'*': [signify]}}\n  signers:\n"
                f"    - {{name: signify, type: notary, config: {{endpoint: '{server.url}/sign', ca-file: {ca.write(folder)}, secret: {{path: {secret}}}}}}}\n"
            ),
        )
        images = ",".join(refs)
        notary_time = bench.run(
            [str(BIN), "sign", "--config", str(notary), "--images-to-sign", images], env
        )
        requests = len(server.sign_requests())
        targets = sum(
            len(c["targets"]) for c in server.sign_requests()[0].json()["trustedCollections"]
        )
    finally:
        server.stop()
    made = subprocess.run(
        [str(BIN), "keygen", "--output-key-prefix", str(bench.work / "bench")],
        env={**env, "COSIGN_PASSWORD": ""},
        capture_output=True,
        text=True,
        check=True,
    )
    key_path = json.loads(made.stdout)["private_key"]
    cosign = bench.config(
        "p6-cosign",
        (
            f"registry: {registry}/sig\nsign-config:\n  enabled-signers: {{'*': [k]}}\n  signers:\n"
            f"    - {{name: k, type: cosign, config: {{private-key: {key_path}, password-env: COSIGN_PASSWORD}}}}\n"
        ),
    )
    cosign_time = bench.run(
        [str(BIN), "sign", "--config", str(cosign), "--images-to-sign", images],
        {**env, "COSIGN_PASSWORD": ""},
    )
    yield Result(
        "P6",
        f"Signify: {count} references, one request",
        "per reference",
        "-",
        notary_time / count,
        1.0,
        "batched",
        None,
        note=f"{requests} request(s) carrying {targets} targets; {notary_time:.2f}s in all",
    )
    yield Result(
        "P6",
        f"cosign: {count} signatures",
        "per reference",
        "-",
        cosign_time / count,
        1.0,
        "-",
        None,
        note=f"{cosign_time:.2f}s in all",
    )


def profile_p1(bench: Bench) -> str:
    """cProfile of one P1 build run in-process: where the wrapper's own time goes."""
    sys.path.insert(0, str(REPO / "src"))
    from image_builder import proc
    from image_builder.cli import main

    registry = bench.registries[0][0]
    ctx = bench.work / "ctx-p1"
    cfg = bench.work / "p1.yaml"
    env = bench.fresh_storage()
    waited = []
    original = proc.run

    def timed_run(*args: object, **kwargs: object) -> proc.Result:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            waited.append(time.perf_counter() - start)

    saved_cwd = Path.cwd()
    os.chdir(bench.work)
    proc.run = timed_run
    profiler = cProfile.Profile()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            profiler.enable()
            code = main(
                [
                    "build",
                    "--name",
                    "bench/profiled",
                    "--context",
                    ctx.name,
                    "--config",
                    str(cfg),
                    "--tag",
                    "t",
                    "--platform",
                    "linux/amd64",
                ],
                env,
            )
            profiler.disable()
    finally:
        os.chdir(saved_cwd)
        proc.run = original
    total = time.perf_counter() - start
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(8)
    own = total - sum(waited)
    lines = [line for line in out.getvalue().splitlines() if line.strip()][-9:]
    del registry
    return (
        f"One P1 build in-process (exit code {code}): {total:.2f}s in all, {sum(waited):.2f}s waiting for "
        f"{len(waited)} buildah/git processes, **{own:.2f}s ({own / total:.1%}) in Image Builder itself** "
        "(imports, planning, HTTP checks of the pushed digests, the report).\n\nTop functions by own time:\n\n```\n"
        + "\n".join(lines)
        + "\n```\n"
    )


def markdown(results: list[Result], cores: int, profile: str, quick: bool) -> str:
    rows = [
        "| Id | Scenario | A | B | A median | B median | A/B | Goal | Met | Note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = "—" if r.met is None else ("yes" if r.met else "**no**")
        rows.append(
            f"| {r.id} | {r.title} | {r.a_label} | {r.b_label} | {r.a_median:.3f}s | {r.b_median:.3f}s | {r.ratio:.2f} | {r.goal} | {met} | {r.note} |"
        )
    head = (
        "# Performance\n\n"
        f"Written by `benchmarks/run.py` on a machine with {cores} cores"
        + (" in --quick mode (tiny images: the timings mean nothing)" if quick else "")
        + f", {time.strftime('%Y-%m-%d')}.\nEvery figure is the median of the rounds, A and B alternating.\n\n"
    )
    return head + "\n".join(rows) + "\n\n## Where the wrapper's time goes (P1)\n\n" + profile


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="tiny images, no sleeps: for the smoke test"
    )
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write the table here (default: docs/performance.md, not in --quick mode)",
    )
    parser.add_argument(
        "--analysis",
        type=Path,
        default=REPO / "benchmarks" / "analysis.md",
        help="hand-written notes appended to the markdown",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="image-builder-bench-"))
    bench = Bench(work, args.rounds, args.quick)
    try:
        results = []
        for result in scenarios(bench):
            print(
                f"{result.id} {result.title}: {result.a_median:.3f}s vs {result.b_median:.3f}s ({result.ratio:.2f}; goal {result.goal}) {result.note}",
                file=sys.stderr,
            )
            results.append(result)
        profile = profile_p1(bench)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "cores": os.cpu_count(),
        "quick": args.quick,
        "rounds": args.rounds,
        "results": [{**asdict(r), "ratio": r.ratio, "met": r.met} for r in results],
    }
    text = json.dumps(payload, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    target = args.markdown or (None if args.quick else REPO / "docs" / "performance.md")
    if target is not None:
        body = markdown(results, os.cpu_count() or 0, profile, args.quick)
        if args.analysis.exists():
            body += "\n" + args.analysis.read_text()
        target.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
