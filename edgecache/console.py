"""Formatting for the command line: sizes, rates, durations, tables."""

from __future__ import annotations

import time
from collections.abc import Sequence

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(count: float) -> str:
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def human_age(timestamp: float) -> str:
    return "never" if not timestamp else f"{human_duration(time.time() - timestamp)} ago"


def table(headers: Sequence[str] | None, rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; numbers right-aligned; headers optional."""
    body = [["" if c is None else str(c) for c in r] for r in rows]
    cells = ([list(headers)] if headers else []) + body
    columns = len(cells[0]) if cells else 0
    widths = [max(len(row[i]) for row in cells) for i in range(columns)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) for r in rows) for i in range(columns)
    ]
    lines = []
    for row in cells:
        lines.append(
            "  ".join(
                cell.rjust(width) if is_number else cell.ljust(width)
                for cell, width, is_number in zip(row, widths, numeric, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)
