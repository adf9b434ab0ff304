"""Single-flight fills: one upstream stream per image, any number of readers tailing it.

A fill writes the upstream bytes into `incoming/<id>.part`, hashing each piece (xxh3 per chunk,
plus Glance's md5 and os_hash_value over the whole) off the event loop. Readers follow the
partial file as it grows, but the final byte is held back until the whole image has been
verified, so a reader can only ever finish a transfer whose bytes Glance vouched for. A broken
upstream stream is resumed with a Range request; a fill that cannot finish or verify is
discarded and every reader's transfer fails.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
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
from edgecache.store.blobs import BlobStore
from edgecache.store.digests import ChunkHasher, ImageDigest
from edgecache.store.evict import Evictor
from edgecache.store.index import BlobEntry, Index
from edgecache.upstream import TRANSIENT_ERRORS, Upstream

log = logging.getLogger(__name__)


class FillFailed(Exception):
    """The fill was abandoned; a reader's transfer must end as a failure."""


class UpstreamShortRead(Exception):
    """The upstream stream ended cleanly before the image's size was reached."""


class UpstreamUnavailable(Exception):
    """The upstream (or a proxy in front of it) answered 5xx; worth trying again."""


class UpstreamRefused(Exception):
    """The upstream answered the data request with something other than the bytes."""


RESUMABLE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    UpstreamShortRead,
    UpstreamUnavailable,
)


class Fill:
    """The state of one image being fetched; shared by the writer task and all readers."""

    def __init__(
        self, image: ImageRecord, size: int, fd: int, chunk_size: int, with_md5: bool = True
    ) -> None:
        self.image = image
        self.size = size
        self.written = 0
        self.verified = False
        self.error: BaseException | None = None
        self.last_progress = time.monotonic()
        self._fd = fd
        self._chunks = ChunkHasher(chunk_size)
        self._digest = ImageDigest(image, with_md5)
        self._progress = asyncio.Event()

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

    async def wait_verified(self) -> None:
        await self.readable_end(self.size)

    async def absorb(self, piece: bytes, executor: Executor) -> None:
        """Write and hash one piece off the event loop: the file and chunk digests on one
        thread, each of Glance's digests on another. Pieces go in one at a time, in order."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            loop.run_in_executor(executor, self._write_and_chunk, piece, self.written),
            *(loop.run_in_executor(executor, update, piece) for update in self._digest.updaters()),
        )
        self.advance(len(piece))

    def _write_and_chunk(self, piece: bytes, offset: int) -> None:
        view = memoryview(piece)
        while view:  # pwrite may write less than asked (a full disk, a signal)
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        self._chunks.update(piece)

    def advance(self, count: int) -> None:
        self.written += count
        self.last_progress = time.monotonic()
        self._notify()

    def mismatch(self) -> str | None:
        if self.written != self.size:
            return f"received {self.written} bytes, Glance says {self.size}"
        return self._digest.mismatch()

    def chunk_digests(self) -> bytes:
        return self._chunks.finish()

    def succeed(self) -> None:
        self.verified = True
        self._notify()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._notify()

    def close(self) -> None:
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
        index: Index,
        upstream: Upstream,
        evictor: Evictor,
        metrics: Metrics,
        executor: Executor,
        chunk_size: int,
        stall_timeout: float,
        verify_md5: bool = True,
    ) -> None:
        self._store = store
        self._index = index
        self._upstream = upstream
        self._evictor = evictor
        self._metrics = metrics
        self._executor = executor
        self._chunk_size = chunk_size
        self._stall_timeout = stall_timeout
        self._verify_md5 = verify_md5
        self._fills: dict[str, Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def current(self, image_id: str) -> Fill | None:
        return self._fills.get(image_id)

    def running(self) -> list[str]:
        return list(self._fills)

    async def start(self, image: ImageRecord, identity: Mapping[str, str]) -> Fill | None:
        """The running fill for `image`, a new one, or None if it cannot be cached now."""
        if (fill := self._fills.get(image.id)) is not None:
            return fill
        assert image.size is not None
        if not await self._evictor.reserve(image.id, image.size):
            return None
        if (fill := self._fills.get(image.id)) is not None:
            self._evictor.release(image.id)
            return fill
        path = self._store.partial_path(image.id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        except OSError as exc:  # out of descriptors, a read-only disk: pass it through
            log.warning("cannot start a fill of %s: %s", image.id, exc)
            self._evictor.release(image.id)
            path.unlink(missing_ok=True)
            return None
        fill = Fill(image, image.size, fd, self._chunk_size, self._verify_md5)
        self._fills[image.id] = fill
        task = asyncio.create_task(self._run(fill, dict(identity)), name=f"fill-{image.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._metrics.fills_started.inc()
        self._metrics.fills_in_progress.inc()
        return fill

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self, fill: Fill, identity: dict[str, str]) -> None:
        image_id = fill.image.id
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            await self._download(fill, identity)
            problem = fill.mismatch()
            if problem is not None:
                self._metrics.verification_failures.inc()
                raise FillFailed(f"image {image_id} failed verification: {problem}")
            await loop.run_in_executor(self._executor, self._store.commit, image_id, fill.fd)
            now = time.time()
            await self._index.add(
                BlobEntry(
                    image_id=image_id,
                    size=fill.size,
                    checksum=fill.image.checksum,
                    hash_algo=fill.image.hash_algo,
                    hash_value=fill.image.hash_value,
                    chunk_size=self._chunk_size,
                    chunk_digests=fill.chunk_digests(),
                    created_at=now,
                    last_access=now,
                )
            )
            fill.succeed()
            self._metrics.fills.labels("completed").inc()
            log.info(
                "cached image %s: %d bytes verified in %.1fs",
                image_id,
                fill.size,
                time.monotonic() - started,
            )
        except BaseException as exc:
            fill.fail(exc)
            self._metrics.fills.labels("failed").inc()
            self._store.partial_path(image_id).unlink(missing_ok=True)
            if not fill.verified:  # renamed into place, but the index never took it
                self._store.delete(image_id)
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("fill of image %s abandoned: %s", image_id, exc)
        finally:
            del self._fills[image_id]
            self._evictor.release(image_id)
            fill.close()
            self._metrics.fills_in_progress.dec()

    async def _download(self, fill: Fill, identity: dict[str, str]) -> None:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RESUMABLE_ERRORS),
            stop=self._stop_when_stalled(fill),
            wait=wait_exponential(multiplier=0.1, max=5),
            before_sleep=self._log_resume(fill),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._stream(fill, identity)

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
                "upstream stream of %s broke at byte %d (%s); resuming",
                fill.image.id,
                fill.written,
                type(error).__name__,
            )

        return before_sleep

    async def _stream(self, fill: Fill, identity: dict[str, str]) -> None:
        offset = fill.written
        uplink = self._upstream.uplink
        if not uplink.online:  # ride out a short outage instead of spinning on UplinkDown
            await uplink.wait_online(self._stall_timeout - self._stalled_for(fill))
        async with self._upstream.image_data(fill.image.id, identity, offset) as response:
            skip = self._bytes_to_skip(response, offset)
            async for piece in response.content.iter_any():
                if skip:
                    dropped = min(skip, len(piece))
                    piece, skip = piece[dropped:], skip - dropped
                    if not piece:
                        continue
                if fill.written + len(piece) > fill.size:
                    raise FillFailed(f"upstream sent more than {fill.size} bytes")
                await fill.absorb(piece, self._executor)
                self._metrics.bytes_fetched.inc(len(piece))
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
