"""The benchmark harness still works end to end (`--quick`: small images, speed not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_quick_benchmark_runs_and_checks_every_byte(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failures"] == []
    assert {scenario["key"] for scenario in report["scenarios"]} >= {"hit-1", "cold", "coalesce"}


def test_resume_benchmark_kills_a_fill_and_counts_the_region_bytes() -> None:
    """`python -m benchmarks resume` (issue 22) on a small image: every body is checked, and the
    region sends the image once when the partial is kept, 1.8 times when it is not."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "resume", "--size", "16MiB", "--repetitions", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    medians = result.stdout.split("(medians of 1):", 1)[1]
    assert "keep_partials=0  region sent 1.80x the image" in medians
    assert "kept (default)   region sent 1.00x the image" in medians
