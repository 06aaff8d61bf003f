"""This tree's image-builder against an earlier commit's, in one run, build for build.

    .venv/bin/python -m benchmarks.compare --baseline <rev> [--rounds 7] [--json out.json]

Runs the build scenarios of benchmarks/run.py (P1 to P4) with both trees alternating, each
build with empty local storage, and reports the medians and the ratio now/baseline. Timings on a
shared 2-core machine drift by 20 % between runs; alternating in one run is what makes a
"within 10 % of before" claim measurable. The baseline is a git worktree of ``<rev>``, run with
the same virtual environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from benchmarks.run import REPO, Bench


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="image-builder-compare-") as tmp:
        work = Path(tmp)
        baseline = work / "baseline"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(baseline),
             args.baseline],
            check=True,
        )  # fmt: skip
        bench = Bench(work / "bench", args.rounds, quick=False)
        bench.work.mkdir()
        try:
            rows = list(scenarios(bench, {"now": REPO / "src", "baseline": baseline / "src"}))
        finally:
            bench.stop()
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)],
                check=False,
            )
    for row in rows:
        print(
            f"{row['id']} {row['title']}: now {row['now']:.3f}s, baseline {row['baseline']:.3f}s "
            f"({row['ratio']:.2f})"
        )
    if args.json:
        args.json.write_text(json.dumps({"baseline": args.baseline, "rows": rows}, indent=2))
    return 0


def scenarios(bench: Bench, trees: dict[str, Path]) -> list[dict[str, object]]:
    reg = [bench.start_registry() for _ in range(3)]
    subprocess.run(
        [str(REPO / "scripts" / "make-busybox-base"), f"{reg[0]}/base/busybox:latest"],
        env=bench.fresh_storage(),
        check=True,
        capture_output=True,
    )
    base = f"{reg[0]}/base/busybox:latest"
    one = bench.config("one", f"registry: {reg[0]}\n")
    three = bench.config("three", f"registry: [{reg[0]}, {reg[1]}, {reg[2]}]\n")
    p1 = bench.context("p1", f"FROM {base}\nRUN echo built > /built\nCOPY data /data\n", 20)
    p3 = bench.context("p3", f"FROM {base}\nCOPY data /data\n", 20)
    p4 = bench.context("p4", f"FROM {base}\nCOPY data /data\n", 5)
    p2 = bench.context("p2", f"FROM {base}\nRUN sleep 5 && echo done > /slow\nCOPY Dockerfile /D\n")

    def build(context: Path, config: Path, platforms: str, *extra: str) -> Callable[[str], float]:
        def run(tree: str) -> float:
            env = bench.fresh_storage()
            env["PYTHONPATH"] = str(trees[tree])
            # python -m: each tree starts through its own entry point (the console script's
            # target may not exist in the other tree).
            argv = [sys.executable, "-m", "image_builder", "build", "--name", bench.name("cmp"),
                    "--context", str(context), "--config", str(config), "--platform", platforms,
                    *extra]  # fmt: skip
            return bench.run(argv, env)

        return run

    def warm_rebuild(tree: str) -> float:
        cache = bench.name("cache")
        config = bench.config(
            f"p2-{bench.counter}",
            f"registry: {reg[0]}\ncache: {{enabled: true, cache-repo: {reg[0]}/{cache}}}\n",
        )
        build(p2, config, "linux/amd64")(tree)  # cold: fills the cache
        return build(p2, config, "linux/amd64")(tree)

    cases: list[tuple[str, str, Callable[[str], float]]] = [
        ("P1", "RUN + COPY 20 MB, 2 tags", build(p1, one, "linux/amd64", "--tag", "t")),
        ("P2", "warm rebuild from the registry cache", warm_rebuild),
        ("P3", "COPY 20 MB to 3 registries", build(p3, three, "linux/amd64")),
        ("P4", "COPY 5 MB for amd64 + arm64", build(p4, one, "linux/amd64,linux/arm64")),
    ]
    rows: list[dict[str, object]] = []
    for case_id, title, run in cases:
        times: dict[str, list[float]] = {"now": [], "baseline": []}
        for number in range(bench.rounds):
            order = ("now", "baseline") if number % 2 == 0 else ("baseline", "now")
            for tree in order:
                times[tree].append(run(tree))
        now, before = statistics.median(times["now"]), statistics.median(times["baseline"])
        rows.append(
            {"id": case_id, "title": title, "now": now, "baseline": before, "ratio": now / before,
             "rounds": bench.rounds}
        )  # fmt: skip
        print(f"{case_id}: now {now:.3f}s, baseline {before:.3f}s", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    os.environ.pop("PYTHONPATH", None)
    sys.exit(main())
