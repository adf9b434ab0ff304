"""Copies whose chunk hashes stopped matching, kept aside in `quarantine/` for a while.

A corrupt copy is moved there rather than deleted, so that an operator can look at what the
disk did to it. It still takes disk space, so it counts toward `max_size`: when room is needed
(a fill, a prune), quarantined files are removed first, oldest first, before any verified copy
is evicted. A periodic pass removes those older than `[cache] quarantine_keep` seconds;
`POST /v2/cache/clean` (`glance cache-clean`) and `edgecache cache clean` remove them all.

What is in the directory is kept in memory (read at start-up and again by every periodic
pass, so files removed by hand are forgotten), so that making room costs no disk access
unless there is something to remove.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from edgecache.metrics import Metrics
from edgecache.store.blobs import BlobStore

log = logging.getLogger(__name__)

CLEAN_INTERVAL = 60.0  # seconds between two periodic passes
T = TypeVar("T")


@dataclass(frozen=True)
class QuarantinedFile:
    name: str  # <image id>.<Unix time it was quarantined>
    size: int
    since: float  # when it was quarantined (Unix time)


@dataclass(frozen=True)
class Removed:
    """Files that left the quarantine, and their bytes (one already gone counts too: it no
    longer takes room)."""

    files: int = 0
    size: int = 0


class Quarantine:
    def __init__(
        self, store: BlobStore, *, keep: float, metrics: Metrics, executor: Executor
    ) -> None:
        """`keep`: seconds a quarantined file is kept at most (`[cache] quarantine_keep`)."""
        self._store = store
        self._directory = store.quarantine_dir
        self._keep = keep
        self._metrics = metrics
        self._executor = executor
        self._files: dict[str, QuarantinedFile] = {}

    @property
    def size(self) -> int:
        """Bytes in quarantine."""
        return sum(file.size for file in self._files.values())

    async def load(self) -> None:
        """Learn what the directory holds (at start-up, and by each periodic pass)."""
        before = set(self._files)
        found = await self._blocking(self._scan)
        admitted_meanwhile = {n: f for n, f in self._files.items() if n not in before}
        self._files = {file.name: file for file in found} | admitted_meanwhile
        self._publish()

    async def admit(self, image_id: str) -> None:
        """Move an image's stored copy here (its index row already dropped); nothing happens
        if the file is gone."""
        moved = await self._blocking(self._move_in, image_id)
        if moved is not None:
            self._files[moved.name] = moved
            self._publish()

    async def make_room(self, wanted: int) -> Removed:
        """Remove quarantined files, oldest first, until `wanted` bytes are freed or none is
        left."""
        chosen, freed = [], 0
        for file in sorted(self._files.values(), key=lambda f: f.since):
            if freed >= wanted:
                break
            chosen.append(file)
            freed += file.size
        return await self._remove(chosen, "room")

    async def remove_expired(self) -> Removed:
        """One pass of the periodic cleaner: remove what was quarantined more than `keep`
        seconds ago."""
        await self.load()
        cutoff = time.time() - self._keep
        return await self._remove([f for f in self._files.values() if f.since <= cutoff], "age")

    async def empty(self) -> Removed:
        """Remove every quarantined file (`glance cache-clean`, `edgecache cache clean`)."""
        await self.load()
        return await self._remove(list(self._files.values()), "clean")

    async def clean_periodically(self) -> None:
        """The periodic cleaner: a pass every CLEAN_INTERVAL seconds, until cancelled."""
        while True:
            try:
                await self.remove_expired()
            except OSError as exc:
                log.warning(
                    "could not clean %s (%s); trying again in %.0f s",
                    self._directory,
                    exc.strerror or exc,
                    CLEAN_INTERVAL,
                )
            await asyncio.sleep(CLEAN_INTERVAL)

    async def _remove(self, files: Iterable[QuarantinedFile], reason: str) -> Removed:
        chosen = list(files)
        if not chosen:
            return Removed()
        unlinked = await self._blocking(self._unlink, chosen, reason)
        for file in chosen:
            self._files.pop(file.name, None)
        self._metrics.quarantine_removed.labels(reason).inc(unlinked)
        self._publish()
        return Removed(len(chosen), sum(file.size for file in chosen))

    def _publish(self) -> None:
        self._metrics.quarantine_files.set(len(self._files))
        self._metrics.quarantine_bytes.set(self.size)

    # --- blocking steps, on the executor --------------------------------------------------

    def _scan(self) -> list[QuarantinedFile]:
        found = []
        for entry in os.scandir(self._directory):
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                stat = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            _, _, stamp = entry.name.rpartition(".")
            since = float(stamp) if stamp.isdigit() else stat.st_mtime
            found.append(QuarantinedFile(entry.name, stat.st_size, since))
        return found

    def _move_in(self, image_id: str) -> QuarantinedFile | None:
        since = int(time.time())
        target = self._directory / f"{image_id}.{since}"
        try:
            os.replace(self._store.blob_path(image_id), target)
            size = target.stat().st_size
        except FileNotFoundError:
            return None
        log.error(
            "The stored copy of image %s no longer matches its hashes; it was moved to %s "
            "and will be fetched again from Glance.",
            image_id,
            target,
        )
        return QuarantinedFile(target.name, size, since)

    def _unlink(self, files: list[QuarantinedFile], reason: str) -> int:
        """How many of `files` this removed (others were removed meanwhile, by hand or by
        another removal, or cannot be: the next periodic pass finds those again)."""
        unlinked = 0
        for file in files:
            path = self._directory / file.name
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("could not remove quarantined copy %s: %s", path, exc.strerror or exc)
                continue
            unlinked += 1
            log.info(
                "removed quarantined copy %s (%d bytes, quarantined %.0f s ago): %s",
                file.name,
                file.size,
                time.time() - file.since,
                _REASONS[reason],
            )
        return unlinked

    async def _blocking(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)


_REASONS = {
    "room": "room was needed under max_size",
    "age": "older than [cache] quarantine_keep",
    "clean": "the quarantine was cleaned on request",
}
