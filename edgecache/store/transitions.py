"""Every change of a stored copy's state, made one image at a time (the rule: see
`edgecache.store`).

Each change runs as a task of its own under its image's lock, so a caller that is cancelled
half-way (a client hanging up, shutdown) never leaves half a change behind, and `settle` waits
for the changes still running before the index is closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import TypeVar

from edgecache.store.blobs import BlobStore
from edgecache.store.index import BlobEntry, Index
from edgecache.store.locks import ImageLocks
from edgecache.store.quarantine import Quarantine

log = logging.getLogger(__name__)

T = TypeVar("T")


class Transitions:
    def __init__(
        self, *, store: BlobStore, index: Index, quarantine: Quarantine, executor: Executor
    ) -> None:
        self._store = store
        self._quarantine = quarantine
        self._index = index
        self._executor = executor
        self.locks = ImageLocks()
        self._generations = itertools.count(1)  # rows read at start-up are generation 0
        self._running: set[asyncio.Task[object]] = set()

    async def recover(self) -> None:
        """Start-up, before anything else runs: drop rows without their whole file, and files
        without a row. (What incoming/ holds is for edgecache.store.partials to judge.)"""
        entries = {entry.image_id: entry for entry in await self._index.all()}
        for image_id, entry in entries.items():
            if await self._blocking(self._store.stored_size, image_id) != entry.size:
                log.warning(
                    "The index names image %s but its file is missing or has the wrong size; "
                    "the copy was dropped and will be fetched again when asked for.",
                    image_id,
                )
                await self._drop_steps(image_id, self._store.delete)
        for name in await self._blocking(self._store.blob_names):
            if name not in entries:
                log.info("removing %s: not committed to the index", name)
                await self._blocking(self._store.delete, name)

    async def commit(self, entry: BlobEntry) -> BlobEntry:
        """Admit a verified fill, its partial file already made durable, as the copy of its
        image, replacing any older copy; returns the entry with its generation."""
        return await self._exclusive(entry.image_id, lambda: self._commit_steps(entry))

    async def discard_partial(self, image_id: str) -> None:
        """Delete what an abandoned fill left in incoming/, or a kept partial that is not
        wanted any more; stored copies are not touched."""
        await self._exclusive(
            image_id, lambda: self._blocking(self._store.delete_partial, image_id)
        )

    async def open_partial(self, image_id: str, opening: Callable[[], T]) -> T:
        """Run `opening` (blocking: a fill creating or reopening its partial file) under the
        image's lock, so that a removal of the image's kept partial finishing late cannot
        unlink the file of a fill started meanwhile."""
        return await self._exclusive(image_id, lambda: self._blocking(opening))

    async def keep_partial(self, image_id: str, flush: Callable[[], int]) -> int | None:
        """Leave the partial file of a fill the daemon stops to a later run: `flush` (blocking)
        makes it durable and says how many bytes it holds. None, and nothing done, if there
        is no partial file any more (a commit its cancelled fill had begun took it)."""

        async def steps() -> int | None:
            if not await self._blocking(self._store.partial_path(image_id).exists):
                return None
            return await self._blocking(flush)

        return await self._exclusive(image_id, steps)

    async def drop(
        self, image_id: str, *, generation: int | None = None, unless_read: bool = False
    ) -> BlobEntry | None:
        """Remove the stored copy of an image (eviction, removal, a copy no longer matching
        Glance). Nothing happens, and None is returned, when there is no copy, when it is not
        of `generation` (a newer fill replaced the one the caller decided about), or, with
        `unless_read`, while it is being read."""

        async def steps() -> BlobEntry | None:
            current = await self._index.get(image_id)
            if current is None or generation not in (None, current.generation):
                return None
            if unless_read and self._store.in_use(image_id):
                return None
            await self._drop_steps(image_id, self._store.delete)
            return current

        return await self._exclusive(image_id, steps)

    async def quarantine(self, entry: BlobEntry) -> bool:
        """Move a corrupt copy aside, if it still is the image's copy (a newer fill may have
        replaced it meanwhile: that one is left alone). True if it was moved."""

        async def steps() -> bool:
            current = await self._index.get(entry.image_id)
            if current is None or current.generation != entry.generation:
                return False
            await self._index.remove(entry.image_id)  # row first, as in _drop_steps
            await self._quarantine.admit(entry.image_id)
            return True

        return await self._exclusive(entry.image_id, steps)

    async def settle(self) -> None:
        """Wait for the changes still running (at shutdown, before the index closes)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _commit_steps(self, entry: BlobEntry) -> BlobEntry:
        if await self._index.get(entry.image_id) is not None:
            await self._index.remove(entry.image_id)  # the rename below replaces its file
        try:
            await self._blocking(self._store.move_into_place, entry.image_id)
        except BaseException:
            await self._blocking(self._store.delete, entry.image_id)  # an older copy, now rowless
            raise
        committed = dataclasses.replace(entry, generation=next(self._generations))
        try:
            await self._index.add(committed)
        except BaseException:
            await self._blocking(self._store.delete, entry.image_id)
            raise
        return committed

    async def _drop_steps(self, image_id: str, dispose: Callable[[str], None]) -> None:
        # Row first: a crash in between leaves a file without a row, which start-up removes.
        await self._index.remove(image_id)
        await self._blocking(dispose, image_id)

    async def _exclusive(self, image_id: str, steps: Callable[[], Awaitable[T]]) -> T:
        async def locked() -> T:
            async with self.locks.hold(image_id):
                return await steps()

        task = asyncio.create_task(locked(), name=f"blob-change-{image_id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(functools.partial(_log_unseen_failure, image_id))
            raise

    async def _blocking(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


def _log_unseen_failure(image_id: str, task: asyncio.Task[object]) -> None:
    """A change whose caller left meanwhile: nobody else will hear how it failed."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error(
            "Could not finish changing the stored copy of image %s (%s); it is out of the "
            "cache now, and a file left behind is removed at the next start.",
            image_id,
            error,
        )
