"""The benchmark must not rot: one quick round, and the output is complete. No timing is judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import REPO


def test_benchmark_runs_and_reports_every_scenario(tmp_path: Path) -> None:
    out_json, out_md = tmp_path / "bench.json", tmp_path / "performance.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--rounds", "1", "--quick", "--json", str(out_json), "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out_json.read_text())
    assert data["cores"] >= 1
    ids = [r["id"] for r in data["results"]]
    assert ids == ["P1", "P2", "P3", "P4", "P5", "P5", "P6", "P6"]
    for result in data["results"]:
        assert result["a_median"] > 0
        assert result["goal"]
    notary = next(r for r in data["results"] if r["title"].startswith("Signify"))
    assert notary["note"].startswith("1 request(s) carrying 50 targets")
    table = out_md.read_text()
    for scenario in ("P1", "P2", "P3", "P4", "P5", "P6"):
        assert f"| {scenario} |" in table
    assert "## Where the wrapper's time goes (P1)" in table
