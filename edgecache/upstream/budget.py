"""One budget for the bytes a node's fills take over its uplink, boots first.

An edge site's uplink is its narrowest and most expensive link. Every byte a fill reads from
the region is taken out of one token bucket per node, refilled at `[upstream] max_rate` bytes
per second, in one of two classes: BOOT (a caller waits for the fill's bytes) and PREFETCH (no
caller does: the prefetch jobs of glance cache-queue and edgecache warm --queue). Whenever the
bucket allows a grant, the oldest waiting boot request goes first. Within a class requests are
granted in the order they were made; each fill asks for one piece at a time, so the fills of a
class take turns.

Prefetches use only what boots leave, and a boot's demand is whatever the link gives it: a
prefetch that took the tokens a boot left unused would take its share of the link from the
boot, which would then leave more unused (the wan benchmark measured a boot during a warm
taking 2.0x as long so, docs/performance.md). So a prefetch is granted nothing while a boot is
under way: while a boot request waits, or within BOOT_HOLD seconds of a boot's last grant. A
fill that keeps up with its link asks for its next piece within milliseconds; one that
trickles (a slow region) leaves the gaps between its pieces to the prefetches.

A request's class is asked again at every decision (`take`'s `kind`): a prefetch that a caller
joins while it waits goes ahead of the other prefetches at once.

A grant may take the bucket into debt by the size granted, which is then paid off at the rate
before the next grant: any size can be taken, and over time exactly `max_rate` bytes a second
are. Nothing polls: one timer wakes the budget when the debt is paid. After an idle spell the
bucket holds at most BURST seconds of the rate. Without a rate nothing waits; the bytes are
only counted.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from edgecache.metrics import Metrics

Kind = Literal["boot", "prefetch"]
BOOT: Final = "boot"
PREFETCH: Final = "prefetch"
KINDS: Final[tuple[Kind, ...]] = (BOOT, PREFETCH)  # in order of precedence
# Seconds of the rate the bucket holds at most after the uplink was idle: enough to ride out
# a short pause of the reader, small against any interval a rate is measured over.
BURST = 0.05
# Seconds after a boot's last grant before prefetches are granted again: well above the gap
# between two pieces of a fill at any uplink's speed (256 KiB at 1 MB/s: a quarter second).
BOOT_HOLD = 0.5


class Clock(Protocol):
    """What the budget needs of time: an asyncio event loop is one."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[[], object]) -> object: ...


@dataclass
class _Request:
    size: int
    kind: Callable[[], Kind]
    asked_at: float
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UplinkBudget:
    def __init__(self, rate: float | None, metrics: Metrics, clock: Clock | None = None) -> None:
        """`rate`: bytes per second, None for no cap; `clock`: the running loop by default."""
        self.rate = rate
        self._clock = clock
        self._paid_until = float("-inf")  # when the bytes granted so far are paid off
        self._boot_granted_at = float("-inf")
        self._waiting: deque[_Request] = deque()
        self._wakeup_at: float | None = None
        self._bytes = {kind: metrics.uplink_bytes.labels(kind) for kind in KINDS}
        self._waited = {kind: metrics.uplink_wait.labels(kind) for kind in KINDS}
        metrics.uplink_max_rate.set(rate or 0)

    async def take(self, size: int, kind: Callable[[], Kind]) -> None:
        """Take `size` bytes, waiting for the bucket and for every request before this one in
        order of precedence; `kind` tells the request's class whenever it is asked."""
        now, current = self._now(), kind()
        if self.rate is None or (now >= self._due(current) and not self._ahead_of(current)):
            self._grant(size, current, now, now)
            return
        request = _Request(size, kind, now)
        self._waiting.append(request)
        self._wake_when_due()
        try:
            await request.granted
        except asyncio.CancelledError:
            if request in self._waiting:
                self._waiting.remove(request)
            raise

    def waiting(self) -> int:
        """How many requests wait for the bucket."""
        return len(self._waiting)

    def _ahead_of(self, kind: Kind) -> bool:
        """Whether a waiting request goes before a new one of class `kind`."""
        return any(KINDS.index(request.kind()) <= KINDS.index(kind) for request in self._waiting)

    def _due(self, kind: Kind) -> float:
        """When a request of class `kind` may be granted, if none goes before it."""
        if kind == BOOT:
            return self._paid_until
        return max(self._paid_until, self._boot_granted_at + BOOT_HOLD)

    def _release(self) -> None:
        """The timer: grant the waiting requests that are due, in order of precedence."""
        self._wakeup_at = None
        now = self._now()
        while self._waiting:
            request, kind = self._next()
            if now < self._due(kind):
                break
            self._waiting.remove(request)
            if request.granted.cancelled():  # its taker is on its way out
                continue
            self._grant(request.size, kind, request.asked_at, now)
            request.granted.set_result(None)
        if self._waiting:
            self._wake_when_due()

    def _next(self) -> tuple[_Request, Kind]:
        """The oldest waiting boot request, else the oldest request."""
        oldest = None
        for request in self._waiting:
            kind = request.kind()
            if kind == BOOT:
                return request, kind
            if oldest is None:
                oldest = request, kind
        assert oldest is not None, "only called while requests wait"
        return oldest

    def _grant(self, size: int, kind: Kind, asked_at: float, now: float) -> None:
        if self.rate is not None:
            self._paid_until = max(self._paid_until, now - BURST) + size / self.rate
        if kind == BOOT:
            self._boot_granted_at = now
        self._bytes[kind].inc(size)
        if now > asked_at:
            self._waited[kind].inc(now - asked_at)

    def _wake_when_due(self) -> None:
        """A timer for when the first waiting request is due, unless one is set before then.
        The debt and the last boot's grant only move on, so no timer is late; one that comes
        early finds nothing due and sets the next."""
        due = self._due(self._next()[1])
        if self._wakeup_at is None or due < self._wakeup_at:
            self._wakeup_at = due
            self._time().call_at(due, self._release)

    def _now(self) -> float:
        return self._time().time()

    def _time(self) -> Clock:
        return self._clock if self._clock is not None else asyncio.get_running_loop()
