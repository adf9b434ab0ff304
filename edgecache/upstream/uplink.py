"""Whether the regional Glance can be reached, from real traffic and background probes.

Online, every request goes upstream and its outcome is observed. After `failures_to_offline`
consecutive connection failures, timeouts or 502/503/504 answers the uplink is offline: requests
stop trying the upstream (no caller waits for a timeout whose outcome is already known) and a
probe asks the upstream's version document every `probe_interval` seconds until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from edgecache.metrics import Metrics

log = logging.getLogger(__name__)


class UplinkDown(Exception):
    """The upstream is known to be unreachable; the request was not sent."""


class Uplink:
    def __init__(
        self,
        *,
        probe: Callable[[], Awaitable[bool]],
        metrics: Metrics,
        failures_to_offline: int = 2,
        probe_interval: float = 2.0,
    ) -> None:
        self._probe = probe
        self._metrics = metrics
        self._failures_to_offline = failures_to_offline
        self._probe_interval = probe_interval
        self._failures = 0
        self.online = True
        self.changed_at = time.time()
        self.reason: str | None = None  # while offline: why, in a sentence
        self._went_online = asyncio.Event()
        self._went_online.set()
        self._went_offline = asyncio.Event()
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self._prober: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()
        self._publish()

    def start(self) -> None:
        self._prober = asyncio.create_task(self._probe_while_offline(), name="uplink-probe")

    async def close(self) -> None:
        tasks = [*self._jobs, *([self._prober] if self._prober else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def on_reconnect(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Run `listener` (in the background) each time the uplink comes back."""
        self._listeners.append(listener)

    async def settle(self) -> None:
        """Wait for the jobs started by the last reconnect (revalidation) to finish."""
        await asyncio.gather(*self._jobs, return_exceptions=True)

    def check(self) -> None:
        """Raise UplinkDown instead of letting a request wait for a known failure."""
        if not self.online:
            raise UplinkDown("the regional Glance is unreachable")

    def record_success(self) -> None:
        self._failures = 0
        if not self.online:
            self._set(online=True, reason="the upstream answers again")

    def note_probe_failure(self, reason: str) -> None:
        """While offline, a failed probe's cause replaces the one the uplink went down with."""
        if not self.online:
            self.reason = reason

    def record_failure(self, reason: str) -> None:
        self._failures += 1
        if self.online and self._failures >= self._failures_to_offline:
            self._set(online=False, reason=reason)

    async def wait_online(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._went_online.wait(), within)
        return self.online

    async def wait_offline(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._went_offline.wait(), within)
        return not self.online

    def _set(self, *, online: bool, reason: str) -> None:
        self.online = online
        self.changed_at = time.time()
        self.reason = None if online else reason
        if online:
            self._went_offline.clear()
            self._went_online.set()
            log.warning("uplink is back online: %s", reason)
            for listener in self._listeners:
                job = asyncio.ensure_future(listener())
                self._jobs.add(job)
                job.add_done_callback(self._job_done)
        else:
            self._went_online.clear()
            self._went_offline.set()
            log.warning("uplink is offline: %s; serving from the cache", reason)
        self._publish()

    def _publish(self) -> None:
        self._metrics.uplink_up.set(1 if self.online else 0)
        self._metrics.uplink_changed.set(self.changed_at)

    async def _probe_while_offline(self) -> None:
        while True:
            await self._went_offline.wait()
            await asyncio.sleep(self._probe_interval)  # the probe's period, not a synchronisation
            if not self.online and await self._probe():
                self.record_success()

    def _job_done(self, job: asyncio.Task[None]) -> None:
        self._jobs.discard(job)
        if not job.cancelled() and job.exception() is not None:
            log.error("reconnect job failed", exc_info=job.exception())
