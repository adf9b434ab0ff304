"""A fill's partial file made durable as it grows, so that what a reboot leaves of it can be
resumed (edgecache.store.sidecar says why a reboot, and only a reboot, can lose written bytes).

Every CHECKPOINT_EVERY bytes written, the partial is flushed (fdatasync) on a worker thread
while writing goes on, and then its record is rewritten to say how many bytes are on disk. A
partial kept across a reboot resumes from its last checkpoint, so a power cut costs a fill
about CHECKPOINT_EVERY bytes, not all of them. When the daemon stops, a last checkpoint covers
everything written.

The flushes cost little: the kernel writes those pages back within half a minute anyway, and
the fill does not wait for them (see docs/performance.md for the figure).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from pathlib import Path

from edgecache.store import sidecar
from edgecache.store.sidecar import PartialRecord

log = logging.getLogger(__name__)

CHECKPOINT_EVERY = 64 * 2**20


class Checkpoints:
    def __init__(
        self,
        fd: int,
        path: Path,
        record: PartialRecord,
        executor: Executor,
        every: int = CHECKPOINT_EVERY,
    ) -> None:
        """`fd`: the partial file, open for the fill; `path`: its record, which says `record`."""
        self.record = record
        self._fd = fd
        self._path = path
        self._executor = executor
        self._every = every
        self._next = record.durable + every  # the next checkpoint once this much is written
        self._running: asyncio.Future[PartialRecord] | None = None

    def reached(self, written: int) -> None:
        """The fill has written its first `written` bytes: flush them if a checkpoint is due
        (and none is under way)."""
        if self._running is not None or written < self._next:
            return
        self._next = written + self._every
        running = asyncio.get_running_loop().run_in_executor(self._executor, self._flush, written)
        running.add_done_callback(self._flushed)
        self._running = running

    async def settle(self) -> None:
        """Wait for the checkpoint under way, if any (the file must stay open for it)."""
        if self._running is not None:
            await asyncio.wait({self._running})

    def final(self) -> int:
        """Flush everything the file holds and say so; how many bytes that is (blocking, once
        nothing writes to the file any more)."""
        length = os.fstat(self._fd).st_size
        self.record = self._flush(length)
        return length

    def _flush(self, durable: int) -> PartialRecord:
        os.fdatasync(self._fd)
        record = self.record.flushed(durable)
        sidecar.write(self._path, record)
        return record

    def _flushed(self, running: asyncio.Future[PartialRecord]) -> None:
        self._running = None
        if running.cancelled():
            return
        error = running.exception()
        if error is None:
            self.record = running.result()
            return
        log.warning(
            "Could not make the partial fill of image %s durable (%s); after a power cut it "
            "would resume from byte %d.",
            self.record.image_id,
            error,
            self.record.durable,
        )
