"""Measured values and their statistics: one Metric per figure, one ScenarioResult per scenario."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    q1: float  # quartiles, meaningful from 4 runs on; with fewer, low/high show the spread
    q3: float
    runs: int


def summarize(values: list[float]) -> Summary:
    ordered = sorted(values)
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
    else:
        q1, q3 = ordered[0], ordered[-1]
    return Summary(statistics.median(ordered), ordered[0], ordered[-1], q1, q3, len(ordered))


@dataclass
class Metric:
    """One figure measured for each contender, once per run."""

    key: str
    label: str
    unit: str
    better: str = ""  # "higher", "lower", or "" when neither is (counts, notes)
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, contender: str, value: float) -> None:
        self.values.setdefault(contender, []).append(value)

    def summary(self, contender: str) -> Summary | None:
        found = self.values.get(contender)
        return summarize(found) if found else None

    def ratio(self, contender: str, baseline: str) -> float | None:
        """Median of `contender` over median of `baseline`."""
        mine, theirs = self.summary(contender), self.summary(baseline)
        if mine is None or theirs is None or theirs.median == 0:
            return None
        return mine.median / theirs.median


@dataclass
class ScenarioResult:
    key: str
    title: str
    metrics: list[Metric]
    runs: list[dict[str, Any]] = field(default_factory=list)  # raw per-run records
    warnings: list[str] = field(default_factory=list)  # measurement caveats, not failures

    def metric(self, key: str) -> Metric:
        for metric in self.metrics:
            if metric.key == key:
                return metric
        raise KeyError(f"{self.key} has no metric {key}")
