"""When queued prefetches may start: `[prefetch] window`, a daily span of local time.

Only the start of a prefetch waits for the window; a prefetch under way when it closes goes
on, and a client's request (a boot) is never held back by it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

_DAY = 24 * 60


class Clock:
    """Local wall-clock time, and waiting for it to pass; tests drive a subclass of their own."""

    def now(self) -> datetime:
        return datetime.now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Window:
    """From `start` to `end` minutes after local midnight, across midnight when end < start."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    def allows(self, now: datetime) -> bool:
        minute = now.hour * 60 + now.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def opens_in(self, now: datetime) -> float:
        """Seconds until the window next opens (0 while it is open). By the wall clock: across
        a change to or from summer time the caller finds it still closed and asks again."""
        if self.allows(now):
            return 0.0
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
        opening = midnight + timedelta(minutes=self.start)
        if opening <= now:
            opening += timedelta(days=1)
        return (opening - now).total_seconds()


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}" if minutes < _DAY else "24:00"
