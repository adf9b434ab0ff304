"""Progress displays for `edgecache warm`: a live view on a terminal, log lines elsewhere."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from edgecache.console import human_duration, human_size
from edgecache.warm import Outcome

_REDRAW_EVERY = 0.25
_LOG_EVERY = 10.0


def _line(outcome: Outcome) -> str:
    target = outcome.target
    label = (target.name or target.id)[:32]
    size = target.size or 0
    done = outcome.received
    if outcome.result != "pending":
        return f"{label:<32} {outcome.result}{': ' + outcome.detail if outcome.detail else ''}"
    percent = f"{100 * done / size:5.1f}%" if size else "  ?  "
    eta = human_duration((size - done) / outcome.rate) if size and outcome.rate else "--"
    return (
        f"{label:<32} {percent} {human_size(done):>10} / {human_size(size):<10} "
        f"{human_size(outcome.rate)}/s  ETA {eta}"
    )


class TerminalProgress:
    """Redraws one line per image in place, a few times a second."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._shown: list[Outcome] = []
        self._drawn_lines = 0
        self._last_draw = 0.0

    def started(self, outcome: Outcome) -> None:
        self._shown.append(outcome)
        self._draw()

    def advanced(self, outcome: Outcome) -> None:
        if time.monotonic() - self._last_draw >= _REDRAW_EVERY:
            self._draw()

    def finished(self, outcome: Outcome) -> None:
        self._draw()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        if self._drawn_lines:
            self._stream.write(f"\x1b[{self._drawn_lines}F")  # back to the first line drawn
        for outcome in self._shown:
            self._stream.write("\x1b[2K" + _line(outcome) + "\n")
        self._drawn_lines = len(self._shown)
        self._stream.flush()


class LogProgress:
    """Plain lines for logs and pipes: start, every ten seconds, and the end of each image."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self._stream = stream
        self._last_line: dict[str, float] = {}

    def started(self, outcome: Outcome) -> None:
        self._write(f"warming {outcome.target.id} ({outcome.target.name or 'unnamed'})")
        self._last_line[outcome.target.id] = time.monotonic()

    def advanced(self, outcome: Outcome) -> None:
        if time.monotonic() - self._last_line[outcome.target.id] >= _LOG_EVERY:
            self._last_line[outcome.target.id] = time.monotonic()
            self._write(_line(outcome))

    def finished(self, outcome: Outcome) -> None:
        self._write(f"{_line(outcome)} ({human_duration(outcome.elapsed)})")

    def _write(self, text: str) -> None:
        self._stream.write(text + "\n")
        self._stream.flush()
