"""Bounded upstream connection pools: one for image data, one for records, lists and documents.

Image data streams (fills, relays, uploads) hold a connection for as long as an image takes to
cross the WAN; record GETs (every authorization) take milliseconds. Each kind has its own
limit, so a burst of fills cannot leave the authorizations without a connection. A request that
finds its pool full waits in line (first come, first served) for up to `pool_wait` seconds,
then is refused with PoolExhausted, which callers answer with a 503: a full pool says that this
site is busy, not that the uplink is down, so it never counts against the uplink's state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from edgecache.metrics import Metrics

DATA_POOL = "data"
METADATA_POOL = "metadata"
# What each pool carries, for the words of a refusal.
_CARRIES = {DATA_POOL: "image data", METADATA_POOL: "image records, lists and documents"}


class PoolExhausted(Exception):
    """No upstream connection of the request's kind came free within the wait deadline."""

    def __init__(self, pool: str, limit: int, waited: float) -> None:
        super().__init__(
            f"all {limit} upstream connections for {_CARRIES.get(pool, pool)} stayed in use "
            f"for {waited:.1f} seconds"
        )
        self.pool = pool
        self.limit = limit
        self.waited = waited


class ConnectionPool:
    """At most `limit` requests of one kind in flight upstream; the others wait in line."""

    def __init__(self, name: str, limit: int, wait: float, metrics: Metrics) -> None:
        self.name = name
        self.limit = limit
        self._wait = wait
        self._free = asyncio.Semaphore(limit)
        self._in_use = metrics.upstream_connections_in_use.labels(name)
        self._waited = metrics.upstream_pool_wait.labels(name)
        self._refused = metrics.upstream_pool_refusals.labels(name)
        metrics.upstream_connection_limit.labels(name).set(limit)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the pool's connections for the block; PoolExhausted if none comes free
        within the deadline."""
        if self._free.locked():
            await self._queue()
        else:
            await self._free.acquire()  # free now: returns without yielding to the loop
        self._in_use.inc()
        try:
            yield
        finally:
            self._in_use.dec()
            self._free.release()

    async def _queue(self) -> None:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._wait):
                await self._free.acquire()
        except TimeoutError:
            self._refused.inc()
            raise PoolExhausted(self.name, self.limit, time.monotonic() - started) from None
        finally:
            self._waited.observe(time.monotonic() - started)
