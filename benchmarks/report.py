"""The terminal table, the targets edgecache is held to, and the JSON results file."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.results import Metric, ScenarioResult, Summary
from benchmarks.stack import DIRECT, EDGECACHE, NGINX

CONTENDERS = (EDGECACHE, NGINX, DIRECT)
_LABEL_WIDTH = 40
_CELL_WIDTH = 21


@dataclass(frozen=True)
class Verdict:
    target: str
    met: bool
    measured: str


Check = Callable[[ScenarioResult], tuple[bool, str] | None]  # None: nothing to judge


@dataclass(frozen=True)
class Target:
    """A goal for one scenario's figures, checked on medians unless it says otherwise."""

    scenario: Callable[[str], bool]  # which result key it applies to
    text: str
    check: Check


def _ratio_at_least(metric: str, minimum: float) -> Check:
    def check(result: ScenarioResult) -> tuple[bool, str] | None:
        ratio = result.metric(metric).ratio(EDGECACHE, NGINX)
        return None if ratio is None else (ratio >= minimum, f"{ratio:.2f}x nginx")

    return check


def _coalescing(result: ScenarioResult) -> tuple[bool, str] | None:
    gets = result.metric("gets").values.get(EDGECACHE)
    spread = result.metric("ttfb_spread").summary(EDGECACHE)
    if not gets or spread is None:
        return None
    met = max(gets) == 1 and spread.median <= 100
    return met, f"{max(gets):.0f} upstream GET(s) at most, spread {spread.median:.0f} ms"


def _memory(result: ScenarioResult) -> tuple[bool, str] | None:
    peaks = [
        summary.high
        for key in ("rss_cold", "rss_hit")
        if (summary := result.metric(key).summary(EDGECACHE)) is not None
    ]
    return None if not peaks else (max(peaks) <= 100, f"{max(peaks):.0f} MiB peak")


TARGETS = (
    Target(
        lambda key: key == "hit-1",
        "hit throughput >= 1.0x nginx",
        _ratio_at_least("throughput", 1.0),
    ),
    Target(
        lambda key: key.startswith("hit-") and key != "hit-1",
        "hit throughput >= 1.0x nginx",
        _ratio_at_least("throughput", 1.0),
    ),
    Target(
        lambda key: key == "cold", "cold fill >= 0.9x nginx", _ratio_at_least("throughput", 0.9)
    ),
    Target(
        lambda key: key == "coalesce",
        "1 upstream fetch (every run); slowest first byte within 100 ms of the first",
        _coalescing,
    ),
    Target(lambda key: key == "rss", "peak RSS <= 100 MiB", _memory),
)


def verdicts(result: ScenarioResult) -> list[Verdict]:
    found = []
    for target in TARGETS:
        if target.scenario(result.key) and (outcome := target.check(result)) is not None:
            found.append(Verdict(target.text, *outcome))
    return found


def table(results: list[ScenarioResult]) -> str:
    header = (
        f"{'':<{_LABEL_WIDTH}}"
        + "".join(f"{name:>{_CELL_WIDTH}}" for name in CONTENDERS)
        + f"{'ec/nginx':>10}{'ec/direct':>10}"
    )
    lines = [
        "median (min-max) over runs; ec = edgecache; GB = 10^9 bytes",
        header,
    ]
    for result in results:
        lines.append("")
        lines.append(f"== {result.key}: {result.title}")
        lines.extend(_row(metric) for metric in result.metrics)
        for verdict in verdicts(result):
            mark = "MET   " if verdict.met else "MISSED"
            lines.append(f"   target {mark} {verdict.target}: {verdict.measured}")
        lines.extend(f"   note: {warning}" for warning in result.warnings)
    return "\n".join(lines)


def _row(metric: Metric) -> str:
    label = f"{metric.label}{f' ({metric.unit})' if metric.unit else ''}"
    cells = "".join(f"{_cell(metric.summary(name)):>{_CELL_WIDTH}}" for name in CONTENDERS)
    ratios = "".join(
        f"{_ratio(metric.ratio(EDGECACHE, baseline) if metric.better else None):>10}"
        for baseline in (NGINX, DIRECT)
    )
    return f"  {label:<{_LABEL_WIDTH - 2}}{cells}{ratios}"


def _cell(summary: Summary | None) -> str:
    if summary is None:
        return "-"
    if summary.runs == 1:
        return _number(summary.median)
    return f"{_number(summary.median)} ({_number(summary.low)}-{_number(summary.high)})"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def write_json(
    path: Path, results: list[ScenarioResult], meta: dict[str, Any], failures: list[str]
) -> None:
    document = {
        "meta": meta,
        "failures": failures,
        "scenarios": [
            {
                "key": result.key,
                "title": result.title,
                "metrics": [
                    {
                        "key": metric.key,
                        "label": metric.label,
                        "unit": metric.unit,
                        "better": metric.better,
                        "summary": {
                            name: asdict(summary)
                            for name in CONTENDERS
                            if (summary := metric.summary(name)) is not None
                        },
                        "values": metric.values,
                        "edgecache_vs_nginx": metric.ratio(EDGECACHE, NGINX),
                        "edgecache_vs_direct": metric.ratio(EDGECACHE, DIRECT),
                    }
                    for metric in result.metrics
                ],
                "targets": [asdict(verdict) for verdict in verdicts(result)],
                "warnings": result.warnings,
                "runs": result.runs,
            }
            for result in results
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
