"""The image cache as the HTTP layer sees it: look up, read verified, fill, evict."""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgecache.config import Settings
from edgecache.database.schema import Schema
from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.ranges import ByteRange
from edgecache.store.blobs import BlobCorrupt, BlobStore, verify_chunk
from edgecache.store.evict import Evictor
from edgecache.store.fill import Fill, FillManager
from edgecache.store.fillmemory import FillMemory
from edgecache.store.index import BlobEntry, Index
from edgecache.store.partials import KeptPartial, KeptPartials
from edgecache.store.priority import FillPriority
from edgecache.store.quarantine import Quarantine
from edgecache.store.recent import RecentlyVerified
from edgecache.store.source import SourcePicker
from edgecache.store.transitions import Transitions
from edgecache.upstream.budget import UplinkBudget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifiedCopy:
    """A stored copy opened for sending: its file, the first span of the bytes wanted (already
    checked, None if none were wanted), and the spans after it (checked as they come)."""

    file: IO[bytes]
    first: ByteRange | None
    rest: AsyncGenerator[ByteRange, None]

    async def spans(self) -> AsyncIterator[ByteRange]:
        """Every span of the bytes wanted, the first already checked, the others as they come."""
        span = self.first
        while span is not None:
            yield span
            span = await anext(self.rest, None)


VERIFY_AHEAD = 4  # chunks re-hashed ahead of the one being sent
SEND_SPAN = 64 << 20  # at most this much per sendfile call


class ImageCache:
    def __init__(
        self,
        *,
        settings: Settings,
        store: BlobStore,
        index: Index,
        evictor: Evictor,
        fills: FillManager,
        priority: FillPriority,
        metrics: Metrics,
        executors: tuple[ThreadPoolExecutor, ...],
        recent: RecentlyVerified,
        transitions: Transitions,
        quarantine: Quarantine,
        partials: KeptPartials,
    ) -> None:
        """`executors`: the first for reads and housekeeping; all are shut down at close."""
        self.settings = settings
        self.store = store
        self.index = index
        self.transitions = transitions
        self.quarantine = quarantine
        self.partials = partials
        self.evictor = evictor
        self.fills = fills
        self.priority = priority
        self._metrics = metrics
        self._executor = executors[0]
        self._executors = executors
        self._recent = recent
        self._cleaners = (
            asyncio.create_task(quarantine.clean_periodically(), name="quarantine-cleaner"),
            asyncio.create_task(partials.clean_periodically(), name="partials-cleaner"),
        )

    @classmethod
    async def open(
        cls,
        settings: Settings,
        sources: SourcePicker,
        metrics: Metrics,
        uplink: UplinkBudget,
        beside: tuple[Schema, ...] = (),
    ) -> ImageCache:
        """`sources`: where fills take their bytes from (edgecache.store.source); `uplink`:
        the node's budget for the bytes they take from the region; `beside`: other owners'
        tables in the index's database."""
        store = BlobStore(Path(settings.cache_dir))
        executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edgecache-io")
        # Fills get threads of their own: their lanes keep a thread while bytes keep coming,
        # and the chunk checks of hits must never queue behind them.
        fill_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edgecache-fill")
        # And so do changes of stored copies (fsync, rename, unlink): a fill's commit and an
        # eviction, which a waiting request needs done, never queue behind either.
        store_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="edgecache-store")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(executor, store.make_layout)
        index = await Index.open(store.index_path, beside)
        quarantine = Quarantine(
            store, keep=settings.quarantine_keep, metrics=metrics, executor=executor
        )
        await quarantine.load()
        transitions = Transitions(
            store=store, index=index, quarantine=quarantine, executor=store_executor
        )
        await transitions.recover()
        partials = KeptPartials(
            store,
            keep=settings.keep_partials,
            discard=transitions.discard_partial,
            metrics=metrics,
            executor=executor,
        )
        await partials.load()
        recent = RecentlyVerified(settings.reverify_after)
        evictor = Evictor(
            max_size=settings.max_size,
            index=index,
            store=store,
            quarantine=quarantine,
            partials=partials,
            transitions=transitions,
            metrics=metrics,
        )
        priority = FillPriority(uplink)
        fills = FillManager(
            store=store,
            transitions=transitions,
            sources=sources,
            evictor=evictor,
            metrics=metrics,
            executor=fill_executor,
            memory=FillMemory(settings.fill_memory, metrics.fill_memory),
            priority=priority,
            chunk_size=settings.chunk_size,
            stall_timeout=settings.stall_timeout,
            verify_md5=settings.verify_md5,
            recent=recent,
            partials=partials,
        )
        return cls(
            settings=settings,
            store=store,
            index=index,
            evictor=evictor,
            fills=fills,
            priority=priority,
            metrics=metrics,
            executors=(executor, fill_executor, store_executor),
            recent=recent,
            transitions=transitions,
            quarantine=quarantine,
            partials=partials,
        )

    async def close(self) -> None:
        for cleaner in self._cleaners:
            cleaner.cancel()
        await asyncio.gather(*self._cleaners, return_exceptions=True)
        await self.fills.close()
        await self.evictor.settle()
        await self.transitions.settle()
        await self.index.close()
        for executor in self._executors:
            executor.shutdown(wait=True)

    async def lookup(self, image: ImageRecord) -> BlobEntry | None:
        """The verified copy of exactly this image, if one is stored."""
        entry = await self.index.get(image.id)
        if entry is None:
            return None
        if entry.size != image.size or (
            entry.hash_value != image.hash_value or entry.checksum != image.checksum
        ):
            log.warning(
                "The stored copy of image %s no longer matches Glance's record of it; it is "
                "dropped and the image fetched again.",
                image.id,
            )
            await self.evictor.remove(image.id, generation=entry.generation)
            return None
        return entry

    def open_blob(self, entry: BlobEntry) -> IO[bytes]:
        """Open a stored copy; FileNotFoundError if it was evicted meanwhile."""
        return self.store.blob_path(entry.image_id).open("rb", buffering=0)

    @asynccontextmanager
    async def verified_copy(
        self, entry: BlobEntry, wanted: ByteRange, *, if_corrupt: str
    ) -> AsyncIterator[VerifiedCopy | None]:
        """The stored copy, marked as read while the block runs, with the first span of
        `wanted` checked before anything is sent; None if the copy is gone or that first chunk
        is corrupt (then quarantined, and logged with `if_corrupt`: what the caller does
        instead)."""
        try:
            blob = self.open_blob(entry)
        except FileNotFoundError:
            yield None
            return
        with blob, self.store.reading(entry.image_id):
            spans = self.verified_spans(blob, entry, wanted, self.settings.verify_reads)
            corrupt: BlobCorrupt | None = None
            try:
                first = await anext(spans, None)
            except BlobCorrupt as exc:
                corrupt = exc
            if corrupt is not None:
                log.error("%s; %s", corrupt, if_corrupt)
                yield None
                return
            try:
                yield VerifiedCopy(blob, first, spans)
            finally:
                await spans.aclose()

    async def verified_spans(
        self, blob: IO[bytes], entry: BlobEntry, wanted: ByteRange, verify: bool = True
    ) -> AsyncGenerator[ByteRange, None]:
        """The bytes of `wanted` in spans that may be sent: each chunk they touch re-hashed.

        Chunks are re-hashed on worker threads a few ahead of the caller, so sending and
        checking overlap, and chunks already checked are handed out together (up to
        SEND_SPAN), so the caller makes few large sends. A chunk that no longer matches its
        hash raises BlobCorrupt, after the copy is quarantined and dropped from the index.
        """
        if not verify:
            for start in range(wanted.start, wanted.end, SEND_SPAN):
                yield ByteRange(start, min(start + SEND_SPAN, wanted.end))
            return
        if not wanted.length:
            return
        loop = asyncio.get_running_loop()
        size = entry.chunk_size
        chunks = iter(range(wanted.start // size, (wanted.end - 1) // size + 1))
        checks: deque[tuple[int, asyncio.Future[None]]] = deque()
        stat = os.fstat(blob.fileno())
        file_id = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)

        def check_ahead() -> None:
            while len(checks) < VERIFY_AHEAD and (chunk := next(chunks, None)) is not None:
                if self._recent.fresh((*file_id, chunk)):
                    job: asyncio.Future[None] = loop.create_future()
                    job.set_result(None)
                else:
                    job = loop.run_in_executor(
                        self._executor, verify_chunk, blob.fileno(), entry, chunk
                    )
                checks.append((chunk, job))

        position = wanted.start
        check_ahead()
        try:
            while checks:
                chunk, job = checks.popleft()
                await job
                self._recent.record((*file_id, chunk))
                end = min(wanted.end, (chunk + 1) * size)
                while checks and checks[0][1].done() and end - position < SEND_SPAN:
                    chunk, job = checks.popleft()
                    job.result()
                    self._recent.record((*file_id, chunk))
                    end = min(wanted.end, (chunk + 1) * size)
                check_ahead()
                yield ByteRange(position, end)
                position = end
        except BlobCorrupt:
            self._metrics.corrupt_blobs.inc()
            await self.transitions.quarantine(entry)
            raise
        finally:
            for _, job in checks:
                job.cancel()

    async def scrub(self, entry: BlobEntry) -> BlobCorrupt | None:
        """Re-hash a whole stored copy; a corrupt one is quarantined (and dropped)."""
        try:
            with self.open_blob(entry) as blob, self.store.reading(entry.image_id):
                async for _ in self.verified_spans(blob, entry, ByteRange(0, entry.size)):
                    pass
        except BlobCorrupt as corrupt:
            return corrupt
        return None

    async def publish_gauges(self) -> None:
        """Bring the size gauges up to date (at scrape time: the index is the truth)."""
        count, size = await self.index.stats()
        self._metrics.cache_size.set(size)
        self._metrics.cached_images.set(count)
        self._metrics.cache_capacity.set(self.settings.max_size)
        self._metrics.fill_memory_limit.set(self.settings.fill_memory)

    async def record_hit(self, image_id: str) -> None:
        await self.index.record_hit(image_id)

    async def fill(self, image: ImageRecord, on_behalf_of: Mapping[str, str]) -> Fill | None:
        return await self.fills.start(image, on_behalf_of)

    def filling(self, image_id: str) -> Fill | None:
        return self.fills.current(image_id)

    def kept_partials(self) -> list[KeptPartial]:
        """The partial fills kept to be resumed, oldest first: `fill` of one of their images
        resumes it, until `partials.keep_for` seconds after its `since`."""
        return self.partials.listing()
