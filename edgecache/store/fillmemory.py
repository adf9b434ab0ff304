"""One budget for the bytes all fills together hold in memory.

A fill holds the bytes it has taken from the upstream until every lane has written or hashed
them. Each fill bounds its own share (see fill.BATCH_SIZE), but many fills at once (`warm
--parallel 8`) would add up; so a fill takes room here before it takes bytes from its
connection, and waits (first come, first served) while the budget is spent. Bytes not taken
stay in the kernel's socket buffer, and TCP slows the upstream down.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import Gauge


class FillMemory:
    def __init__(self, limit: int, in_use_gauge: Gauge) -> None:
        self.limit = limit
        self.in_use = 0
        self._gauge = in_use_gauge
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def take(self, size: int) -> None:
        """Hold `size` bytes of the budget, waiting until they are free."""
        if size > self.limit:
            raise ValueError(f"{size} bytes can never fit a budget of {self.limit}")
        if not self._waiting and self.in_use + size <= self.limit:
            self._hold(size)
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.give_back(size)  # granted just as the waiter was cancelled
            else:
                self._waiting.remove((size, granted))
                self._grant()  # a smaller request behind this one may fit now
            raise

    def give_back(self, size: int) -> None:
        self.in_use -= size
        self._gauge.set(self.in_use)
        self._grant()

    def waiting(self) -> int:
        """How many takers wait for room."""
        return len(self._waiting)

    def _grant(self) -> None:
        while self._waiting and self.in_use + self._waiting[0][0] <= self.limit:
            size, granted = self._waiting.popleft()
            self._hold(size)
            granted.set_result(None)

    def _hold(self, size: int) -> None:
        self.in_use += size
        self._gauge.set(self.in_use)
