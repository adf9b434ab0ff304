"""Single-flight fills: one upstream stream per image, any number of readers tailing it.

A fill writes the upstream bytes into `incoming/<id>.part`, hashing each piece (xxh3 per chunk,
plus Glance's md5 and os_hash_value over the whole) off the event loop. Readers follow the
partial file as it grows, but the final byte is held back until the whole image has been
verified, so a reader can only ever finish a transfer whose bytes Glance vouched for. A broken
stream is resumed with a Range request, from whichever source the fill's picker offers then
(the region, or a sibling node of the zone: edgecache.store.source); a fill that cannot
finish or verify is discarded and every reader's transfer fails.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import Executor
from typing import IO

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
)

from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.ranges import ByteRange
from edgecache.singleflight import SingleFlight
from edgecache.store import resume, sidecar
from edgecache.store.blobs import BlobStore
from edgecache.store.checkpoints import Checkpoints
from edgecache.store.digests import CHUNK_DIGEST_SIZE, ChunkHasher, ImageDigest
from edgecache.store.evict import Evictor
from edgecache.store.fillmemory import FillMemory
from edgecache.store.index import BlobEntry
from edgecache.store.lanes import Lanes, LaneStopped
from edgecache.store.partials import KeptPartial, KeptPartials
from edgecache.store.priority import FillPriority
from edgecache.store.recent import RecentlyVerified
from edgecache.store.sidecar import PartialRecord
from edgecache.store.source import REGION, ByteSource, SourceLost, SourcePicker
from edgecache.store.transitions import Transitions
from edgecache.upstream.client import TRANSIENT_ERRORS

log = logging.getLogger(__name__)


class FillFailed(Exception):
    """The fill was abandoned; a reader's transfer must end as a failure."""


class UpstreamShortRead(Exception):
    """The upstream stream ended cleanly before the image's size was reached."""


class UpstreamUnavailable(Exception):
    """The upstream (or a proxy in front of it) answered 5xx; worth trying again."""


class UpstreamRefused(Exception):
    """The upstream answered the data request with something other than the bytes."""


# The most received bytes handed to the worker threads at once (large enough that hand-overs
# cost little against hashing), and how many such batches a fill may have in its lanes: a
# fill holds at most (LANE_DEPTH + 1) * BATCH_SIZE. A depth of 4 filled no faster than 2 (cold
# fill 0.92x nginx either way) and raised the peak RSS of the 32-stream run from 61 to 76 MiB.
# All fills together hold no more than the FillMemory budget; they take bytes from their
# connections at most PIECE_SIZE at a time, after taking room for them from the budget.
BATCH_SIZE = 4 * 2**20
LANE_DEPTH = 2
PIECE_SIZE = 256 * 2**10

RESUMABLE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    UpstreamShortRead,
    UpstreamUnavailable,
    SourceLost,
)


class Fill:
    """The state of one image being fetched; shared by the writer task and all readers."""

    def __init__(
        self,
        image: ImageRecord,
        size: int,
        fd: int,
        chunk_size: int,
        executor: Executor,
        with_md5: bool,
        checkpoints: Checkpoints | None,
    ) -> None:
        """`checkpoints`: make the partial file durable as it grows (None: it is not kept
        when the daemon stops)."""
        self.image = image
        self.size = size
        self.written = 0
        self.verified = False
        self.error: BaseException | None = None
        self.last_progress = time.monotonic()
        # How far this fill's bytes are from the region (edgecache.store.source); None until
        # its first source is chosen.
        self.depth: int | None = None
        self._source_chosen = asyncio.Event()
        self._fd = fd
        self._chunks = ChunkHasher(chunk_size)
        self._digest = ImageDigest(image, with_md5)
        self._progress = asyncio.Event()
        self._updaters = self._digest.updaters()
        self._submitted = 0  # bytes handed to the lanes
        self._lanes = Lanes(executor, 1 + len(self._updaters))
        self.checkpoints = checkpoints

    def open_reader(self) -> IO[bytes]:
        """A private read handle on the partial file; it stays valid after commit or discard."""
        return os.fdopen(os.dup(self._fd), "rb", buffering=0)

    async def readable_end(self, offset: int) -> int:
        """Wait until bytes beyond `offset` may be sent and return where they end.

        Until the fill is verified the last byte is withheld, so no transfer can complete on
        unverified data. Raises FillFailed once the fill is abandoned.
        """
        while True:
            if self.error is not None:
                raise FillFailed(str(self.error)) from self.error
            limit = self.size if self.verified else min(self.written, self.size - 1)
            if limit > offset or (self.verified and offset >= self.size):
                return limit
            progress = self._progress
            await progress.wait()

    async def spans(self, wanted: ByteRange) -> AsyncIterator[ByteRange]:
        """The bytes of `wanted` in spans as they land on disk (the image's last byte only once
        the whole image is verified); FillFailed if the fill is abandoned."""
        sent = wanted.start
        while sent < wanted.end:
            end = min(await self.readable_end(sent), wanted.end)
            yield ByteRange(sent, end)
            sent = end

    def take_from(self, source: ByteSource) -> None:
        if self.depth is None or source.depth < self.depth:
            self.depth = source.depth
        self._source_chosen.set()

    async def wait_source_chosen(self) -> None:
        """Until the fill knows its depth, or has ended (one that resumed a kept partial of
        the whole image never chose a source)."""
        await self._source_chosen.wait()

    async def wait_verified(self) -> None:
        await self.readable_end(self.size)

    def absorb(self, batch: list[bytes]) -> tuple[asyncio.Future[None], asyncio.Future[list[None]]]:
        """Start writing and hashing a batch of pieces off the event loop: the file and chunk
        digests in one lane, each of Glance's digests in another. Returns two futures: the
        batch is on disk (readers may send it), and every lane has processed it."""
        size, offset = sum(len(piece) for piece in batch), self._submitted
        self._submitted += size
        write = self._lanes.submit(0, functools.partial(self._write_and_chunk, batch, offset))
        return write, self._hash_alongside(write, batch, size)

    def rehash(self, piece: bytes) -> asyncio.Future[list[None]]:
        """Hash bytes read back from the partial file at the current end (the kept beginning
        of an image) as if they had just been received; they count as written once the chunk
        lane has them. The future: every lane has processed them."""
        self._submitted += len(piece)
        chunks = self._lanes.submit(0, functools.partial(self._chunks.update, piece))
        return self._hash_alongside(chunks, [piece], len(piece))

    def _hash_alongside(
        self, first: asyncio.Future[None], batch: list[bytes], size: int
    ) -> asyncio.Future[list[None]]:
        """Once `first` (the file's lane: written and chunk-hashed) is done the batch counts as
        written; meanwhile Glance's digests take it in their own lanes."""
        first.add_done_callback(lambda step: self._written(step, size))
        hashing = [
            self._lanes.submit(lane, functools.partial(_update_with, update, batch))
            for lane, update in enumerate(self._updaters, start=1)
        ]
        return asyncio.gather(first, *hashing)

    def busy(self) -> bool:
        """Whether bytes handed over are still being written."""
        return self._submitted > self.written

    def _written(self, step: asyncio.Future[None], size: int) -> None:
        if not step.cancelled() and step.exception() is None:
            self.advance(size)

    def _write_and_chunk(self, batch: list[bytes], offset: int) -> None:
        for piece in batch:
            view = memoryview(piece)
            while view:  # pwrite may write less than asked (a full disk, a signal)
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written
            self._chunks.update(piece)

    def advance(self, count: int) -> None:
        self.written += count
        self.last_progress = time.monotonic()
        if self.checkpoints is not None:
            self.checkpoints.reached(self.written)
        self._notify()

    def mismatch(self) -> str | None:
        if self.written != self.size:
            return f"received {self.written} bytes, Glance says {self.size}"
        return self._digest.mismatch()

    def chunk_digests(self) -> bytes:
        return self._chunks.finish()

    def succeed(self) -> None:
        self.verified = True
        self._source_chosen.set()
        self._notify()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._source_chosen.set()
        self._notify()

    async def settle(self) -> None:
        """Wait until no worker thread writes, hashes or flushes the partial file any more."""
        await self._lanes.settle()
        if self.checkpoints is not None:
            await self.checkpoints.settle()

    async def close(self) -> None:
        """Close the partial file once no worker thread can still be writing to it. Cancelled
        meanwhile, the descriptor is left open rather than risk a late write landing in a
        file that reuses its number."""
        await self.settle()
        os.close(self._fd)

    @property
    def fd(self) -> int:
        return self._fd

    def _notify(self) -> None:
        waiters, self._progress = self._progress, asyncio.Event()
        waiters.set()


class FillManager:
    """Starts at most one fill per image and commits or discards it."""

    def __init__(
        self,
        *,
        store: BlobStore,
        transitions: Transitions,
        sources: SourcePicker,
        evictor: Evictor,
        metrics: Metrics,
        executor: Executor,
        memory: FillMemory,
        priority: FillPriority,
        chunk_size: int,
        stall_timeout: float,
        verify_md5: bool,
        recent: RecentlyVerified,
        partials: KeptPartials,
    ) -> None:
        """`partials`: the partials kept by earlier runs (a fill of their image resumes them);
        while its keep_partials is 0, none is kept and fills leave none behind."""
        self._store = store
        self._transitions = transitions
        self._partials = partials
        self._sources = sources
        self._evictor = evictor
        self._metrics = metrics
        self._executor = executor
        self._memory = memory
        self._priority = priority
        self._chunk_size = chunk_size
        self._stall_timeout = stall_timeout
        self._verify_md5 = verify_md5
        self._recent = recent
        self._fills: dict[str, Fill] = {}
        self._starts: SingleFlight[str, None] = SingleFlight()
        self._tasks: set[asyncio.Task[None]] = set()

    def current(self, image_id: str) -> Fill | None:
        return self._fills.get(image_id)

    def running(self) -> list[str]:
        return list(self._fills)

    async def start(self, image: ImageRecord, on_behalf_of: Mapping[str, str]) -> Fill | None:
        """The running fill for `image`, a new one, or None if it cannot be cached now.

        Requests that miss the same image while its fill waits for room share that one start:
        each starting its own would, after the wait, fetch again an image just stored.
        """
        if (fill := self._fills.get(image.id)) is not None:
            return fill
        await self._starts.run(image.id, lambda: self._start(image, on_behalf_of))
        return self._fills.get(image.id)

    async def _start(self, image: ImageRecord, on_behalf_of: Mapping[str, str]) -> None:
        assert image.size is not None
        kept = self._partials.take(image.id)
        if kept is not None and not kept.record.describes(image):
            log.info(
                "Image %s changed at the region since its partial fill was kept (%d bytes): "
                "they are discarded, and its fill starts from byte 0.",
                image.id,
                kept.length,
            )
            self._partials.count_discarded("changed")
            await self._transitions.discard_partial(image.id)
            kept = None
        if not await self._evictor.reserve(image.id, image.size):
            if kept is not None:
                self._partials.give_back(kept)
            return
        try:
            fd, record = await self._transitions.open_partial(
                image.id, functools.partial(self._open_partial, image, kept)
            )
        except OSError as exc:  # out of descriptors, a read-only disk: pass it through
            log.warning("cannot start a fill of %s: %s", image.id, exc)
            self._evictor.release(image.id)
            await self._transitions.discard_partial(image.id)  # a kept partial too
            return
        checkpoints = (
            Checkpoints(fd, self._store.sidecar_path(image.id), record, self._executor)
            if record is not None
            else None
        )
        fill = Fill(
            image, image.size, fd, self._chunk_size, self._executor, self._verify_md5, checkpoints
        )
        self._fills[image.id] = fill
        resume_at = kept.length if kept is not None else 0
        task = asyncio.create_task(
            self._run(fill, dict(on_behalf_of), resume_at), name=f"fill-{image.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._metrics.fills_started.inc()
        self._metrics.fills_in_progress.inc()

    def _open_partial(
        self, image: ImageRecord, kept: KeptPartial | None
    ) -> tuple[int, PartialRecord | None]:
        """The partial file of a fill starting now, open, and its record if partials are kept:
        the kept one, or a new empty file (blocking)."""
        path = self._store.partial_path(image.id)
        if kept is not None:
            return os.open(path, os.O_RDWR), kept.record
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        if not self._partials.keep_for:
            return fd, None
        record = PartialRecord.of(image)
        try:
            sidecar.write(self._store.sidecar_path(image.id), record)
        except BaseException:
            os.close(fd)
            raise
        return fd, record

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, fill: Fill, on_behalf_of: dict[str, str], resume_at: int) -> None:
        """`resume_at`: how many bytes of a kept partial the fill starts with."""
        image_id = fill.image.id
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            if resume_at:
                await self._read_back(fill, resume_at)
            if fill.written < fill.size:
                await self._download(fill, on_behalf_of)
            problem = fill.mismatch()
            if problem is not None:
                self._metrics.verification_failures.inc()
                if resume_at:
                    self._kept_bytes_were_wrong(fill, resume_at, problem)
                raise FillFailed(f"image {image_id} failed verification: {problem}")
            await fill.settle()  # no checkpoint may rewrite the record the commit removes
            chunk_digests = fill.chunk_digests()
            # The fill's own file: made durable on its own threads, before the image's lock.
            await loop.run_in_executor(self._executor, self._store.make_durable, fill.fd)
            now = time.time()
            await self._transitions.commit(
                BlobEntry(
                    image_id=image_id,
                    size=fill.size,
                    checksum=fill.image.checksum,
                    hash_algo=fill.image.hash_algo,
                    hash_value=fill.image.hash_value,
                    chunk_size=self._chunk_size,
                    chunk_digests=chunk_digests,
                    created_at=now,
                    last_access=now,
                ),
            )
            self._recent.record_copy(fill.fd, len(chunk_digests) // CHUNK_DIGEST_SIZE)
            fill.succeed()
            self._metrics.fills.labels("completed").inc()
            log.info(
                "cached image %s: %d bytes verified in %.1fs",
                image_id,
                fill.size,
                time.monotonic() - started,
            )
        except BaseException as exc:
            try:  # before the readers hear of it: they may ask again at once
                await fill.settle()
                if isinstance(exc, asyncio.CancelledError) and fill.checkpoints is not None:
                    await self._keep(fill, fill.checkpoints)  # the daemon stops
                else:
                    await self._transitions.discard_partial(image_id)
            finally:
                fill.fail(exc)
                self._metrics.fills.labels("failed").inc()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning(
                "The fill of image %s was abandoned (%s); its transfers were aborted, and the "
                "next request for it starts a new one.",
                image_id,
                exc,
            )
        finally:
            del self._fills[image_id]
            self._evictor.release(image_id)
            await fill.close()
            self._metrics.fills_in_progress.dec()

    async def _read_back(self, fill: Fill, length: int) -> None:
        started = time.monotonic()
        await resume.read_back(fill, length, self._memory, self._executor)
        self._metrics.resumed_bytes.inc(fill.written)
        log.info(
            "The fill of image %s resumes at byte %d of %d: the bytes an earlier run kept were "
            "read back and hashed again in %.1f s, and the rest is asked for with Range.",
            fill.image.id,
            fill.written,
            fill.size,
            time.monotonic() - started,
        )

    def _kept_bytes_were_wrong(self, fill: Fill, kept: int, problem: str) -> None:
        self._partials.count_discarded("verification")
        log.warning(
            "The fill of image %s resumed from %d bytes kept by an earlier run, and the whole "
            "image failed verification (%s): the kept bytes were not what Glance had sent (a "
            "torn tail after a power cut, or a damaged disk). The fill is discarded, and the "
            "next request for the image fetches it again from byte 0.",
            fill.image.id,
            kept,
            problem,
        )

    async def _keep(self, fill: Fill, checkpoints: Checkpoints) -> None:
        """Leave the partial file of a fill the daemon stops, flushed, to a later run."""
        kept = await self._transitions.keep_partial(fill.image.id, checkpoints.final)
        if kept is not None:
            log.info(
                "The fill of image %s stopped with the daemon at byte %d of %d; the partial is "
                "kept, and a fill of the image within %.0f s resumes from there.",
                fill.image.id,
                kept,
                fill.size,
                self._partials.keep_for,
            )

    async def _download(self, fill: Fill, on_behalf_of: dict[str, str]) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RESUMABLE_ERRORS),
            stop=self._stop_when_stalled(fill),
            wait=wait_exponential(multiplier=0.1, max=5),
            before_sleep=self._log_resume(fill),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._stream(fill, on_behalf_of)

    def _stop_when_stalled(self, fill: Fill) -> Callable[[RetryCallState], bool]:
        """Give up once no byte has arrived for `stall_timeout` seconds."""
        return lambda _state: self._stalled_for(fill) >= self._stall_timeout

    @staticmethod
    def _stalled_for(fill: Fill) -> float:
        return time.monotonic() - fill.last_progress

    def _log_resume(self, fill: Fill) -> Callable[[RetryCallState], None]:
        def before_sleep(state: RetryCallState) -> None:
            self._metrics.fill_resumes.inc()
            error = state.outcome.exception() if state.outcome else None
            log.info(
                "stream of %s broke at byte %d (%s); resuming",
                fill.image.id,
                fill.written,
                type(error).__name__,
            )

        return before_sleep

    async def _stream(self, fill: Fill, on_behalf_of: dict[str, str]) -> None:
        offset = fill.written
        source = await self._sources.pick(
            fill.image, fill.depth, self._stall_timeout - self._stalled_for(fill)
        )
        fill.take_from(source)
        fetched = (
            self._metrics.bytes_fetched
            if source.kind == REGION
            else self._metrics.sibling_bytes_fetched
        )
        # The region's bytes are taken out of the uplink budget; a sibling's are not.
        region = self._priority.stream(fill.image.id) if source.kind == REGION else None
        uplink = region.take if region is not None else None
        intake = _Intake(fill, self._memory, BATCH_SIZE, LANE_DEPTH, uplink)
        try:
            async with source.image_data(fill.image.id, on_behalf_of, offset) as response:
                if region is not None:
                    region.carried_by(response)
                skip = self._bytes_to_skip(response, offset)
                while piece := await intake.receive(response.content):
                    if skip:
                        dropped = min(skip, len(piece))
                        intake.forget(dropped)
                        piece, skip = piece[dropped:], skip - dropped
                        if not piece:
                            continue
                    await intake.add(piece)
                    fetched.inc(len(piece))
        finally:
            # Also after a broken stream: what did arrive is good, and the resume starts after it.
            await intake.finish()
        if fill.written < fill.size:
            raise UpstreamShortRead(f"stream ended at byte {fill.written} of {fill.size}")

    @staticmethod
    def _bytes_to_skip(response: aiohttp.ClientResponse, offset: int) -> int:
        """How many leading bytes of the answer we already have; refuse anything unusable."""
        if response.status >= 500:
            raise UpstreamUnavailable(f"upstream answered {response.status}")
        if response.status == 200:
            return offset
        if response.status == 206 and offset:
            content_range = response.headers.get("Content-Range", "")
            if content_range.startswith(f"bytes {offset}-"):
                return 0
            raise UpstreamRefused(f"upstream sent range {content_range!r}, wanted {offset}-")
        raise UpstreamRefused(f"upstream answered {response.status} to the data request")


class _Intake:
    """Hands a fill the upstream's pieces in batches while the next ones are being received.

    A batch goes to the lanes at once when the file's writer is idle, so the first bytes reach
    readers without delay, and gathers up to `batch_size` while it is busy, so a large image
    costs few thread hand-overs. At most `depth` batches are in the lanes and one is gathered,
    which bounds the memory a fill holds; every byte received counts against the budget of all
    fills until its batch has been through every lane. With an `uplink` budget, each piece is
    taken out of it once received, before the next one is read.
    """

    def __init__(
        self,
        fill: Fill,
        memory: FillMemory,
        batch_size: int,
        depth: int,
        uplink: Callable[[int], Awaitable[None]] | None,
    ) -> None:
        self._fill = fill
        self._memory = memory
        self._uplink = uplink
        self._batch_size = batch_size
        self._depth = depth
        self._received = fill.written
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._in_lanes: deque[asyncio.Future[list[None]]] = deque()

    async def receive(self, stream: aiohttp.StreamReader) -> bytes:
        """The next piece of the upstream's answer (b"" at its end), counted in the budget
        from now on: `add` it, or `forget` what is not kept."""
        await self._memory.take(PIECE_SIZE)
        try:
            piece = await stream.read(PIECE_SIZE)
            if piece and self._uplink is not None:
                await self._uplink(len(piece))
        except BaseException:
            self._memory.give_back(PIECE_SIZE)
            raise
        self._memory.give_back(PIECE_SIZE - len(piece))
        return piece

    def forget(self, size: int) -> None:
        self._memory.give_back(size)

    async def add(self, piece: bytes) -> None:
        if self._received + len(piece) > self._fill.size:
            self.forget(len(piece))
            raise FillFailed(f"upstream sent more than {self._fill.size} bytes")
        self._received += len(piece)
        self._fill.last_progress = time.monotonic()
        self._pending.append(piece)
        self._pending_size += len(piece)
        if self._pending_size >= self._batch_size or not self._fill.busy():
            self._hand_over()
        while self._in_lanes and (self._in_lanes[0].done() or len(self._in_lanes) > self._depth):
            await self._in_lanes.popleft()  # a failure in the lanes is the fill's

    async def finish(self) -> None:
        """Process everything received so far and wait until it is written and hashed."""
        if self._pending:
            self._hand_over()
        outcomes = await asyncio.gather(*self._in_lanes, return_exceptions=True)
        self._in_lanes.clear()
        for outcome in outcomes:  # the first real failure; the lanes stopped after it
            if isinstance(outcome, BaseException) and not isinstance(outcome, LaneStopped):
                raise outcome

    def _hand_over(self) -> None:
        batch, size = self._pending, self._pending_size
        self._pending, self._pending_size = [], 0
        written, processed = self._fill.absorb(batch)
        written.add_done_callback(self._writer_free)
        processed.add_done_callback(lambda _: self._memory.give_back(size))
        self._in_lanes.append(processed)

    def _writer_free(self, written: asyncio.Future[None]) -> None:
        """Hand over what arrived meanwhile, so a pause upstream does not hold it back."""
        failed = written.cancelled() or written.exception() is not None
        if self._pending and not failed and not self._fill.busy():
            self._hand_over()


def _update_with(update: Callable[[bytes], None], batch: list[bytes]) -> None:
    for piece in batch:
        update(piece)
