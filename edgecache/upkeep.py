"""Remembered state kept bounded while the daemon runs (issue 20).

Every minute: decisions and tokens past their expiry are purged, documents nobody had from
Glance for `decision_ttl` are dropped (no remembered decision can serve them any more), and
the index is held under `[cache] index_max_size`, least recently had documents first, then
the decisions that would expire soonest. The version documents and schemas every client
reads first are never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass

from edgecache.authorization.decisions import DecisionStore
from edgecache.database.connection import Database
from edgecache.documents import DocumentStore
from edgecache.metrics import Metrics

log = logging.getLogger(__name__)

PERIOD = 60.0
_BATCH = 100  # rows dropped at a time while the index is above its bound


@dataclass
class IndexUpkeep:
    db: Database
    documents: DocumentStore
    decisions: DecisionStore
    metrics: Metrics
    max_bytes: int
    document_ttl: float

    async def run_forever(self) -> None:
        while True:
            try:
                await self.once()
            except sqlite3.Error as exc:
                log.warning(
                    "Could not purge old remembered state from the cache index (%s); trying "
                    "again in %.0f s. Check the cache disk.",
                    exc,
                    PERIOD,
                )
            await asyncio.sleep(PERIOD)

    async def once(self) -> None:
        """One pass: purge by age, then hold the index under its size bound."""
        self.metrics.index_max_bytes.set(self.max_bytes)
        await self.decisions.purge_expired()
        aged = await self.documents.purge_older_than(time.time() - self.document_ttl)
        self.metrics.index_rows_dropped.labels("age").inc(aged)
        used = await self.db.used_bytes()
        dropped = 0
        while used > self.max_bytes:
            batch = await self.documents.drop_oldest(_BATCH)
            if not batch:
                batch = await self.decisions.drop_soonest_expiring(_BATCH)
            if not batch:
                break
            dropped += batch
            used = await self.db.used_bytes()
        self.metrics.index_bytes.set(used)
        if dropped:
            self.metrics.index_rows_dropped.labels("size").inc(dropped)
            log.warning(
                "The cache index had more remembered state than [cache] index_max_size (%d "
                "bytes): the %d least recently used remembered answers were dropped, and the "
                "callers they served will ask Glance again. Raise index_max_size if this "
                "recurs.",
                self.max_bytes,
                dropped,
            )
