"""Size-capped LRU eviction; space for a fill is reserved before it starts.

Blobs being read are skipped (the blob store counts readers) and fills are not in the index
until committed, so neither can be evicted. Copies are removed through `Transitions`, like
every other change of a copy.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from edgecache.metrics import Metrics
from edgecache.store.blobs import BlobStore
from edgecache.store.index import Index
from edgecache.store.transitions import Transitions

log = logging.getLogger(__name__)

DISK_HEADROOM = 64 << 20  # kept free for the index and its write-ahead log


class Evictor:
    def __init__(
        self,
        *,
        max_size: int,
        index: Index,
        store: BlobStore,
        transitions: Transitions,
        metrics: Metrics,
    ) -> None:
        self.max_size = max_size
        self._index = index
        self._store = store
        self._transitions = transitions
        self._metrics = metrics
        self._reserved: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def reserve(self, image_id: str, size: int) -> bool:
        """Make room for `size` more bytes and hold it for `image_id`; False if impossible.

        Room means both: under max_size, and free space on the filesystem (which other data
        may share) for this and every fill in progress, plus headroom for the index.
        """
        async with self._lock:
            if size > self.max_size:
                return False
            reserved = sum(self._reserved.values())
            over_capacity = await self._index.total_size() + reserved + size - self.max_size
            free = shutil.disk_usage(self._store.root).free
            over_disk = reserved + size + DISK_HEADROOM - free
            wanted = max(over_capacity, over_disk)
            if wanted > 0 and (await self._evict(wanted, all_or_nothing=True))[1] < wanted:
                log.warning("no room for image %s (%d bytes): passing it through", image_id, size)
                return False
            self._reserved[image_id] = size
            return True

    def release(self, image_id: str) -> None:
        self._reserved.pop(image_id, None)

    async def prune(self) -> tuple[int, int]:
        """Evict least recently used copies until the cache is within max_size."""
        async with self._lock:
            excess = await self._index.total_size() + sum(self._reserved.values())
            excess -= self.max_size
            if excess <= 0:
                return 0, 0
            return await self._evict(excess)

    async def remove(self, image_id: str, generation: int | None = None) -> bool:
        """Drop one copy (an admin's request, or one Glance no longer vouches for); refused
        while it is being read. With `generation`, only that copy: not a newer one."""
        async with self._lock:
            dropped = await self._transitions.drop(
                image_id, generation=generation, unless_read=True
            )
            return dropped is not None

    async def _evict(self, wanted: int, all_or_nothing: bool = False) -> tuple[int, int]:
        """Drop unread copies, least recently used first, until `wanted` bytes are freed.

        With `all_or_nothing`, nothing is dropped unless that frees enough: emptying the cache
        for an image that still would not fit (a disk full of other data) helps nobody.
        """
        candidates = [
            (image_id, size)
            for image_id, size in await self._index.eviction_order()
            if not self._store.in_use(image_id)
        ]
        if all_or_nothing and sum(size for _, size in candidates) < wanted:
            return 0, 0
        files = freed = 0
        for image_id, _ in candidates:
            if freed >= wanted:
                break
            dropped = await self._transitions.drop(image_id, unless_read=True)
            if dropped is None:  # a reader came meanwhile
                continue
            self._metrics.evictions.inc()
            self._metrics.evicted_bytes.inc(dropped.size)
            log.info("evicted image %s (%d bytes) to stay under max_size", image_id, dropped.size)
            files += 1
            freed += dropped.size
        return files, freed
