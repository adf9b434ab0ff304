"""Size-capped LRU eviction; space for a fill is reserved before it starts.

Quarantined copies (corrupt ones kept aside, edgecache.store.quarantine) and partial fills
kept to be resumed (edgecache.store.partials) count toward max_size too, and go first when room
is needed, in that order, before any stored copy.

Blobs being read are skipped (the blob store counts readers) and fills are not in the index
until committed, so neither can be evicted. Copies are removed through `Transitions`, like
every other change of a copy.

A reservation decides in memory and does not wait for the copies it evicts to be gone: their
removals (an index write and an unlink each, under their image's lock) run on their own while
their bytes count as freed. Every miss takes the reservation lock, and under load a
reservation that waited for its removals held it for seconds at a time, so misses queued
behind each other until clients timed out. A removal that is refused after all (a reader came
meanwhile, or a newer copy replaced the one chosen) leaves the cache above max_size, so it
starts a make-up at once: the excess counted again, and other unread copies evicted for it.
Where every other copy is being read too, the debt is kept and the make-up runs again when a
copy's last reader is done.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Coroutine
from typing import Any

from edgecache.metrics import Metrics
from edgecache.store.blobs import BlobStore
from edgecache.store.index import Index
from edgecache.store.partials import KeptPartials
from edgecache.store.quarantine import Quarantine
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
        quarantine: Quarantine,
        partials: KeptPartials,
        transitions: Transitions,
        metrics: Metrics,
    ) -> None:
        self.max_size = max_size
        self._index = index
        self._store = store
        self._quarantine = quarantine
        self._partials = partials
        self._transitions = transitions
        self._metrics = metrics
        self._reserved: dict[str, int] = {}
        self._freeing: dict[str, int] = {}  # copies being evicted for room -> their size
        self._evicting: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()
        # The cache may be above max_size: an eviction was refused and no other copy could go.
        self._owed = False
        store.on_last_reader = self._reader_left

    async def reserve(self, image_id: str, size: int) -> bool:
        """Make room for `size` more bytes and hold it for `image_id`; False if impossible.

        Room means both: under max_size, and free space on the filesystem (which other data
        may share) for this and every fill in progress, plus headroom for the index.
        """
        async with self._lock:
            if size > self.max_size:
                return False
            reserved = sum(self._reserved.values())
            over_capacity = await self._excess() + size
            free = shutil.disk_usage(self._store.root).free + sum(self._freeing.values())
            over_disk = reserved + size + DISK_HEADROOM - free
            wanted = max(over_capacity, over_disk)
            if wanted > 0 and not await self._start_evicting(wanted):
                log.warning("no room for image %s (%d bytes): passing it through", image_id, size)
                return False
            self._reserved[image_id] = size
            return True

    def release(self, image_id: str) -> None:
        self._reserved.pop(image_id, None)

    async def prune(self) -> tuple[int, int]:
        """Remove quarantined files, then kept partials, then evict least recently used
        copies, until the cache is within max_size; (files, bytes) removed."""
        async with self._lock:
            excess = await self._excess()
            if excess <= 0:
                return 0, 0
            return await self._evict(excess)

    async def _excess(self) -> int:
        """Bytes stored (copies, quarantine, kept partials) and reserved beyond max_size, not
        counting copies being evicted."""
        stored = await self._index.total_size() + self._quarantine.size + self._partials.size
        held = stored + sum(self._reserved.values())
        return held - self.max_size - await self._still_indexed_freeing()

    def _reader_left(self, image_id: str) -> None:
        if self._owed:
            self._in_background(self._make_up(), f"make-up-after-{image_id}")

    async def _make_up(self) -> None:
        """Evict for the room a refused eviction did not free; owe what no copy can give."""
        async with self._lock:
            excess = await self._excess()
            self._owed = excess > 0 and not await self._start_evicting(excess, partial=True)

    def _evictable(self, image_id: str) -> bool:
        return not self._store.in_use(image_id) and image_id not in self._freeing

    async def _still_indexed_freeing(self) -> int:
        """Bytes of copies being evicted whose rows are still counted in the index's size."""
        total = 0
        for image_id, size in list(self._freeing.items()):
            if await self._index.get(image_id) is not None:
                total += size
        return total

    async def settle(self) -> None:
        """Wait for the evictions still running (at shutdown)."""
        while self._evicting:
            await asyncio.gather(*self._evicting, return_exceptions=True)

    async def _start_evicting(self, wanted: int, *, partial: bool = False) -> bool:
        """Remove quarantined files and kept partials, then start removing unread copies,
        least recently used first, that free `wanted` bytes together; False if all of them
        would not be enough, and then nothing is removed unless `partial`."""
        candidates = []
        for image_id, _ in await self._index.eviction_order():
            entry = await self._index.get(image_id)
            if entry is not None and self._evictable(image_id):
                candidates.append(entry)
        evictable = sum(entry.size for entry in candidates)
        if self._quarantine.size + self._partials.size + evictable < wanted and not partial:
            return False
        wanted -= (await self._quarantine.make_room(wanted)).size
        wanted -= (await self._partials.make_room(wanted))[1]
        enough = evictable >= wanted
        freed = 0
        for entry in candidates:
            if freed >= wanted:
                break
            self._freeing[entry.image_id] = entry.size
            freed += entry.size
            _log_eviction(entry.image_id, entry.size)
            self._in_background(
                self._evict_one(entry.image_id, entry.generation), f"evict-{entry.image_id}"
            )
        return enough

    def _in_background(self, removal: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(removal, name=name)
        self._evicting.add(task)
        task.add_done_callback(self._evicting.discard)

    async def _evict_one(self, image_id: str, generation: int) -> None:
        try:
            dropped = await self._transitions.drop(
                image_id, generation=generation, unless_read=True
            )
        except OSError as exc:
            log.error(
                "Could not evict image %s from the cache (%s); the cache may stay above "
                "max_size until the next eviction. Check the cache directory's disk.",
                image_id,
                exc.strerror or exc,
            )
            return
        finally:
            self._freeing.pop(image_id, None)
        if dropped is None:
            log.info(
                "image %s stays in the cache after all (a reader came, or a newer copy replaced "
                "it): evicting others for its room",
                image_id,
            )
            self._in_background(self._make_up(), f"make-up-for-{image_id}")
        else:
            self._counted(dropped.size)

    def _counted(self, size: int) -> None:
        self._metrics.evictions.inc()
        self._metrics.evicted_bytes.inc(size)

    async def remove(self, image_id: str, generation: int | None = None) -> bool:
        """Drop one copy (an admin's request, or one Glance no longer vouches for); refused
        while it is being read. With `generation`, only that copy: not a newer one."""
        async with self._lock:
            dropped = await self._transitions.drop(
                image_id, generation=generation, unless_read=True
            )
            return dropped is not None

    async def _evict(self, wanted: int) -> tuple[int, int]:
        """Remove quarantined files and kept partials, then drop unread copies, least
        recently used first, until `wanted` bytes are freed."""
        candidates = [
            (image_id, size)
            for image_id, size in await self._index.eviction_order()
            if self._evictable(image_id)
        ]
        quarantined = await self._quarantine.make_room(wanted)
        files, freed = quarantined.files, quarantined.size
        partials, partial_bytes = await self._partials.make_room(wanted - freed)
        files, freed = files + partials, freed + partial_bytes
        for image_id, size in candidates:
            if freed >= wanted:
                break
            _log_eviction(image_id, size)
            dropped = await self._transitions.drop(image_id, unless_read=True)
            if dropped is None:  # a reader came meanwhile
                log.info("image %s stays in the cache after all: it is being read", image_id)
                continue
            self._counted(dropped.size)
            files += 1
            freed += dropped.size
        return files, freed


def _log_eviction(image_id: str, size: int) -> None:
    """Said before the copy is removed, so that a crash half-way never hides an eviction."""
    log.info("evicting image %s (%d bytes) to stay under max_size", image_id, size)
