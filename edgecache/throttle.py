"""Log lines of one kind at a bounded rate, so that a flood cannot grow the log without bound."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

# A flood of one kind writes at most this many lines a minute (about 2 KB).
LINES_PER_PERIOD = 10
PERIOD = 60.0


class ThrottledLog:
    """At most `lines` lines every `period` seconds; the lines left out are counted, and the
    next line written says how many there were."""

    def __init__(
        self,
        logger: logging.Logger,
        level: int,
        *,
        lines: int = LINES_PER_PERIOD,
        period: float = PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._level = level
        self._lines = lines
        self._period = period
        self._clock = clock
        self._period_started = clock()
        self._written = 0
        self._left_out = 0

    def log(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._period_started >= self._period:
            self._period_started, self._written = now, 0
        if self._written >= self._lines:
            self._left_out += 1
            return
        self._written += 1
        if self._left_out:
            message += " (%d more like it were not logged)"
            args = (*args, self._left_out)
            self._left_out = 0
        self._logger.log(self._level, message, *args)
