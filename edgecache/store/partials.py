"""Partial fills kept to be resumed: what a run that stopped (shutdown, kill -9, a reboot) left
in incoming/.

A kept partial is the beginning of an image, never a copy: it is in no index row, never
served, and only a fill of its image (edgecache.store.fill) takes it, reads its bytes back to
hash them again, and asks its source for the rest with Range; the whole is verified against
Glance's checksums like any fill before the copy is committed.

Start-up (`load`) keeps a partial whose record (edgecache.store.sidecar) can be read, whose
file is no longer than the image, and whose fill stopped less than `[cache] keep_partials`
seconds ago (0: none is kept); after a reboot it is cut back to what its last checkpoint
flushed. Everything else in incoming/ is removed. A fill that finds the image changed at the
region since (another size or checksum) starts from byte 0 instead.

Kept partials count toward max_size. When room is needed they go after quarantined copies
and before any stored copy, oldest first: a stored copy serves boots at once, offline too,
while a partial only saves WAN bytes, and only if its image is asked for again. A pass every
minute removes those kept longer than keep_partials.

What is kept is known in memory, so making room costs no disk access unless something is
removed. A partial leaves the set when a fill takes it (before any await), so a removal and a
fill never both own one, and its removal holds the image's lock (through `discard`), so a
fill starting afresh cannot have its new file unlinked by a late removal.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from edgecache.metrics import Metrics
from edgecache.store import sidecar
from edgecache.store.blobs import BlobStore
from edgecache.store.sidecar import PartialRecord

log = logging.getLogger(__name__)

CLEAN_INTERVAL = 60.0  # seconds between two periodic passes
PART, RECORD = ".part", ".json"


@dataclass(frozen=True)
class KeptPartial:
    record: PartialRecord
    length: int  # bytes kept: the beginning of the image
    since: float  # when its fill last wrote to it (the file's mtime, Unix time)

    @property
    def image_id(self) -> str:
        return self.record.image_id


class KeptPartials:
    def __init__(
        self,
        store: BlobStore,
        *,
        keep: float,
        discard: Callable[[str], Awaitable[None]],
        metrics: Metrics,
        executor: Executor,
    ) -> None:
        """`keep`: seconds a partial is kept after its fill stopped (`[cache] keep_partials`);
        `discard`: deletes an image's partial file and record under the image's lock."""
        self._store = store
        self.keep_for = keep
        self._discard = discard
        self._metrics = metrics
        self._executor = executor
        self._kept: dict[str, KeptPartial] = {}

    @property
    def size(self) -> int:
        """Bytes kept."""
        return sum(partial.length for partial in self._kept.values())

    def listing(self) -> list[KeptPartial]:
        """What is kept, oldest first."""
        return sorted(self._kept.values(), key=lambda partial: partial.since)

    async def load(self) -> None:
        """At start-up, before anything is served: keep what can be resumed, remove the rest."""
        loop = asyncio.get_running_loop()
        self._kept = {p.image_id: p for p in await loop.run_in_executor(self._executor, self._scan)}
        self._publish()

    def take(self, image_id: str) -> KeptPartial | None:
        """Hand an image's kept partial to a fill starting now (it owns the file from now on)."""
        partial = self._kept.pop(image_id, None)
        self._publish()
        return partial

    def give_back(self, partial: KeptPartial) -> None:
        """A partial taken by a fill that found no room to start: a later fill may."""
        self._kept[partial.image_id] = partial
        self._publish()

    def count_discarded(self, reason: str) -> None:
        """A partial a fill took and did not resume (or resumed and could not verify)."""
        self._metrics.kept_partials_discarded.labels(reason).inc()

    async def make_room(self, wanted: int) -> tuple[int, int]:
        """Remove kept partials, oldest first, until `wanted` bytes are freed or none is left;
        (files, bytes) removed."""
        files = freed = 0
        for partial in self.listing():
            if freed >= wanted:
                break
            if await self._remove(partial, "room", "room was needed under max_size"):
                files, freed = files + 1, freed + partial.length
        return files, freed

    async def remove_expired(self) -> None:
        """One pass of the periodic cleaner: remove those kept longer than keep_partials."""
        cutoff = time.time() - self.keep_for
        for partial in self.listing():
            if partial.since <= cutoff:
                await self._remove(partial, "age", "kept longer than [cache] keep_partials")

    async def clean_periodically(self) -> None:
        """The periodic cleaner: a pass every CLEAN_INTERVAL seconds, until cancelled."""
        while True:
            try:
                await self.remove_expired()
            except OSError as exc:
                log.warning(
                    "could not remove an expired partial fill (%s); trying again in %.0f s",
                    exc.strerror or exc,
                    CLEAN_INTERVAL,
                )
            await asyncio.sleep(CLEAN_INTERVAL)

    async def _remove(self, partial: KeptPartial, reason: str, why: str) -> bool:
        """Remove a kept partial; False if a fill took it meanwhile."""
        if self._kept.get(partial.image_id) is not partial:
            return False
        del self._kept[partial.image_id]
        self._publish()
        await self._discard(partial.image_id)  # at once: no await between pop and lock
        self.count_discarded(reason)
        log.info(
            "removed the partial fill of image %s (%d bytes kept): %s",
            partial.image_id,
            partial.length,
            why,
        )
        return True

    def _publish(self) -> None:
        self._metrics.kept_partials.set(len(self._kept))
        self._metrics.kept_partial_bytes.set(self.size)

    # --- blocking steps, on the executor --------------------------------------------------

    def _scan(self) -> list[KeptPartial]:
        kept = []
        for entry in os.scandir(self._store.incoming_dir):
            image_id, suffix = os.path.splitext(entry.name)
            if suffix == PART:
                partial = self._judge(image_id)
                if partial is not None:
                    kept.append(partial)
            elif suffix != RECORD or not self._store.partial_path(image_id).exists():
                # a record without its partial (maybe just removed with it), one being written
                Path(entry.path).unlink(missing_ok=True)
        return kept

    def _judge(self, image_id: str) -> KeptPartial | None:
        """The partial of `image_id` if it can be resumed (cut back to what is trusted), else
        None once it is removed."""
        path = self._store.partial_path(image_id)
        record = sidecar.read(self._store.sidecar_path(image_id))
        stat = path.stat()
        age = time.time() - stat.st_mtime
        problem = _problem(image_id, record, stat.st_size, age, self.keep_for)
        if problem is not None:
            reason, why = problem
            self._store.delete_partial(image_id)
            self.count_discarded(reason)
            log.info(
                "discarded the partial fill of image %s left by an earlier run: %s", image_id, why
            )
            return None
        assert record is not None  # else a problem
        trusted = record.trusted(stat.st_size)
        if trusted < stat.st_size:
            os.truncate(path, trusted)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # its age stays its own
            log.warning(
                "The partial fill of image %s was written before the machine restarted: it is "
                "kept only up to its last checkpoint (%d of %d bytes), since what was written "
                "after that may not have reached the disk.",
                image_id,
                trusted,
                stat.st_size,
            )
        log.info(
            "kept the partial fill of image %s left by an earlier run (%d of %d bytes): a fill "
            "of the image within %.0f s resumes from there",
            image_id,
            trusted,
            record.size,
            self.keep_for - age,
        )
        return KeptPartial(record, trusted, stat.st_mtime)


def _problem(
    image_id: str, record: PartialRecord | None, length: int, age: float, keep_for: float
) -> tuple[str, str] | None:
    """Why a partial left by an earlier run cannot be resumed, as (reason, sentence); None if
    it can."""
    if record is None or record.image_id != image_id:
        return "corrupt", "it has no readable record of its image"
    if length > record.size:
        return "corrupt", f"it holds {length} bytes, more than the image's {record.size}"
    if age >= keep_for:
        return "age", f"its fill stopped {age:.0f} s ago; [cache] keep_partials is {keep_for:.0f} s"
    return None
