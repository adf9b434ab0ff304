"""The prefetch queue behind `PUT /v2/cache/{id}` (and so `glance cache-queue`, `edgecache warm`).

Queued images wait in order; a bounded number of workers turn them into fills. An image leaves
the queue when its fill starts, so "queued" means "not started yet", as in Glance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from edgecache.headers import as_edgecache
from edgecache.images import ImageRecord
from edgecache.store.cache import ImageCache
from edgecache.store.fill import FillFailed

log = logging.getLogger(__name__)


class Prefetcher:
    def __init__(self, cache: ImageCache, parallel: int) -> None:
        self._cache = cache
        self._parallel = parallel
        self._queued: dict[str, tuple[ImageRecord, dict[str, str]]] = {}
        self._wakeup = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._workers: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"prefetch-{n}") for n in range(self._parallel)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def queue(self, image: ImageRecord, identity: Mapping[str, str]) -> None:
        """Ask for `image` to be cached; a no-op if it is already queued."""
        self._queued.setdefault(image.id, (image, as_edgecache(identity)))
        self._idle.clear()
        self._wakeup.set()

    def queued(self) -> list[str]:
        return list(self._queued)

    def discard(self, image_id: str) -> bool:
        return self._queued.pop(image_id, None) is not None

    def clear(self) -> int:
        count = len(self._queued)
        self._queued.clear()
        self._update_idle()
        return count

    async def join(self) -> None:
        """Wait until nothing is queued or being prefetched."""
        await self._idle.wait()

    async def _work(self) -> None:
        while True:
            if not self._queued:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            image_id = next(iter(self._queued))
            image, identity = self._queued.pop(image_id)
            self._active += 1
            try:
                with contextlib.suppress(FillFailed):
                    await self._prefetch(image, identity)
            finally:
                self._active -= 1
                self._update_idle()

    def _update_idle(self) -> None:
        if not self._queued and not self._active:
            self._idle.set()

    async def _prefetch(self, image: ImageRecord, identity: dict[str, str]) -> None:
        if self._cache.filling(image.id) is None and await self._cache.lookup(image):
            return
        fill = await self._cache.fill(image, identity)
        if fill is None:
            log.warning("cannot prefetch image %s: larger than the free cache space", image.id)
            return
        await fill.wait_verified()
