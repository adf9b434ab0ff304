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
