"""Fixtures for the reliability suite, and the figures every test reports.

Each test records what it tried and saw through the `figures` fixture; at the end of the
session `pytest_terminal_summary` prints one block with the totals and each test's line.

Knobs (environment): EDGECACHE_RELIABILITY_SEED replays seeded trials (each test reports the
seeds it used); EDGECACHE_SOAK_SECONDS (default 45) and EDGECACHE_SOAK_CLIENTS (200) size
the soak. The disk tests mount a small tmpfs when allowed (root), else say so and skip that
one test; the fault-hook tests cover the same ground either way.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import UpstreamServer
from tests.fakeglance import FakeGlance
from tests.reliability.daemon import Daemons
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.helpers import RobustGlance


@dataclass
class Figures:
    totals: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    peaks: dict[str, float] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)


FIGURES = pytest.StashKey[Figures]()


def _figures(config: pytest.Config) -> Figures:
    if FIGURES not in config.stash:
        config.stash[FIGURES] = Figures()
    return config.stash[FIGURES]


class Reporter:
    """What one test reports: totals added to the session's, and lines of its own."""

    def __init__(self, figures: Figures, test: str) -> None:
        self._figures = figures
        self.test = test

    def add(self, key: str, count: float = 1) -> None:
        self._figures.totals[key] += count

    def peak(self, key: str, value: float) -> None:
        self._figures.peaks[key] = max(value, self._figures.peaks.get(key, value))

    def note(self, text: str) -> None:
        self._figures.lines.append((self.test, text))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Reporter:
    return Reporter(_figures(request.config), request.node.name)


@pytest.fixture
def glance() -> FakeGlance:
    """Here the fake Glance answers its own slips with 400s (see RobustGlance)."""
    return RobustGlance()


@pytest.fixture
async def proxy(upstream_server: UpstreamServer) -> AsyncIterator[FaultProxy]:
    """A fault-injecting proxy in front of the fake Glance."""
    fault_proxy = FaultProxy(upstream_server.port)
    await fault_proxy.start()
    yield fault_proxy
    await fault_proxy.close()


@pytest.fixture
async def daemons(tmp_path: Path) -> AsyncIterator[Daemons]:
    workdir = tmp_path / "daemons"
    workdir.mkdir()
    started = Daemons(workdir)
    yield started
    await started.close()


@pytest.fixture
def seed() -> int:
    """A base seed for a test's random trials: EDGECACHE_RELIABILITY_SEED, else a fresh one
    (every test reports the seeds it used, so a failing trial can be replayed)."""
    return int(os.environ.get("EDGECACHE_RELIABILITY_SEED") or int.from_bytes(os.urandom(3)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "reliability" in report.nodeid:
        _DURATIONS[report.nodeid.split("::")[-1]] = report.duration


_DURATIONS: dict[str, float] = {}

SUMMARY_ORDER = (
    ("fault trials run/survived", ("fault_trials", "fault_trials_survived")),
    ("resumes seen (edgecache_fill_resumes_total)", ("resumes",)),
    ("kill -9 trials run/consistent", ("kill_trials", "kill_trials_consistent")),
    ("bad inputs tried", ("bad_inputs",)),
    ("5xx answers to bad input (must be 0)", ("bad_input_5xx",)),
    ("leaks found (must be 0)", ("leaks",)),
    ("corrupt bytes served (must be 0)", ("corrupt_bytes_served",)),
    ("soak requests/errors", ("soak_requests", "soak_errors")),
    ("soak bytes received", ("soak_bytes",)),
)
SOAK_RSS = "soak peak RSS (MiB)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    if FIGURES not in config.stash:
        return
    figures = config.stash[FIGURES]
    write = terminalreporter.write_line
    terminalreporter.section("edgecache reliability figures")
    for label, keys in SUMMARY_ORDER:
        values = "/".join(_number(figures.totals.get(key, 0)) for key in keys)
        if keys[0] == "soak_requests":
            label += "/peak RSS MiB"
            values += "/" + _number(round(figures.peaks.get(SOAK_RSS, 0), 1))
        write(f"{label:<52} {values}")
    listed = {key for _, keys in SUMMARY_ORDER for key in keys}
    for key, value in sorted(figures.totals.items()):
        if key not in listed:
            write(f"{key:<52} {_number(value)}")
    write("")
    for test, line in figures.lines:
        took = _DURATIONS.get(test)
        write(f"{test}{f' ({took:.1f}s)' if took is not None else ''}: {line}")
    total = sum(_DURATIONS.values())
    if total:
        write(f"reliability tests: {len(_DURATIONS)} run in {total:.1f}s")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
