"""The prefetch queue behind `PUT /v2/cache/{id}` (`glance cache-queue`, `edgecache warm
--queue`).

Jobs wait in the order they were queued, kept in the index database (edgecache.prefetch.jobs)
so that a restart or a kill loses none; `parallel` workers start them, only inside `[prefetch]
window` if one is set. A job starts by reading the image's record from the region with its
credentials (edgecache.prefetch.credentials): the image is fetched as it is now, and
credentials the region no longer accepts are found before any byte is. Then the image is
filled as a miss fills it (joining a fill already under way), and the job ends once the copy
is stored. "Queued" in Glance's sense is every job not finished: those waiting and those
running.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from edgecache.authorization.keystone import KEYSTONE_ERRORS, describe
from edgecache.images import ImageRecord
from edgecache.prefetch.credentials import JobCredentials, Runner
from edgecache.prefetch.jobs import Job, JobStore
from edgecache.prefetch.window import Clock, Window
from edgecache.store.cache import ImageCache
from edgecache.store.fill import FillFailed
from edgecache.upstream.client import TRANSIENT_ERRORS, Upstream
from edgecache.upstream.pools import PoolExhausted

log = logging.getLogger(__name__)

# Seconds before a job that met a failure of the region or of Keystone is tried again. While
# the uplink is down no job starts (each would begin by asking the region); all may once it
# is back.
RETRY_AFTER = 30.0
_REGION_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, PoolExhausted)
QUEUED = "queued"
RUNNING = "running"
WAITING = "waiting"  # for the window, or to be tried again
# Until someone queues the image again: only this node's queue can give a job credentials.
NEEDS_CREDENTIALS = "waiting for credentials"


@dataclass(frozen=True)
class JobProgress:
    """A job as `edgecache status` shows it: bytes `done` of `size` while it runs."""

    image_id: str
    state: str  # QUEUED, RUNNING, WAITING or NEEDS_CREDENTIALS
    done: int
    size: int | None
    why: str | None = None  # what a waiting job waits for


class RegionTrouble(Exception):
    """The region (or Keystone) could not answer the job now; it is tried again later."""


class Prefetcher:
    def __init__(
        self,
        *,
        cache: ImageCache,
        jobs: JobStore,
        credentials: JobCredentials,
        upstream: Upstream,
        parallel: int,
        window: Window | None,
        clock: Clock,
    ) -> None:
        self._cache = cache
        self._store = jobs
        self._credentials = credentials
        self._upstream = upstream
        self._parallel = parallel
        self._window = window
        self._clock = clock
        self._jobs: dict[str, Job] = {}  # in the order they were queued
        self._running: set[str] = set()
        # A job that failed for the region's (or Keystone's) sake: its failure, and when it
        # may be tried again (local time, by the clock), until an attempt gets past them.
        self._trouble: dict[str, tuple[str, datetime]] = {}
        self._changed = asyncio.Event()  # replaced by a new one at each change (_pulse)
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Take up the jobs a previous run left, and start the workers."""
        for job in await self._store.all():
            self._jobs[job.image_id] = job
        if self._jobs:
            log.info("%d prefetch jobs from before the last stop are queued again", len(self._jobs))
        self._upstream.uplink.on_reconnect(self._uplink_back)
        self._workers = [
            asyncio.create_task(self._work(), name=f"prefetch-{n}") for n in range(self._parallel)
        ]

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    async def queue(self, image: ImageRecord, headers: Mapping[str, str]) -> None:
        """Ask for `image` to be cached with the caller's credentials (`headers`); an image
        already queued is fetched with these from now on, one already stored is not queued."""
        if self._cache.filling(image.id) is None and await self._cache.lookup(image):
            return
        if image.id not in self._jobs:
            job = Job(image.id, image.size, time.time())
            await self._store.add(job)
            self._jobs[image.id] = job
        self._credentials.hold(image.id, headers)
        self._pulse()

    def queued(self) -> list[str]:
        """Every job not finished, waiting or running, the oldest first."""
        return list(self._jobs)

    def progress(self) -> list[JobProgress]:
        return [self._progress_of(job, self._clock.now()) for job in self._jobs.values()]

    async def discard(self, image_id: str) -> bool:
        """Dequeue an image (a fill under way goes on); False if it was not queued."""
        if image_id not in self._jobs:
            return False
        await self._forget(image_id)
        return True

    async def clear(self) -> None:
        await self._store.clear()
        for image_id in list(self._jobs):
            self._credentials.release(image_id)
        self._jobs.clear()
        self._trouble.clear()
        self._pulse()

    async def join(self) -> None:
        """Wait until no job runs or could start now (those waiting for the window, the
        uplink, credentials or their time to be tried again do not count)."""
        while True:
            changed = self._changed
            if not self._running and self._startable() is None:
                return
            await changed.wait()

    def _progress_of(self, job: Job, now: datetime) -> JobProgress:
        fill = self._cache.filling(job.image_id)
        if fill is not None:
            return JobProgress(job.image_id, RUNNING, fill.written, fill.size)
        if job.image_id in self._running:
            return JobProgress(job.image_id, RUNNING, 0, job.size)
        progress = JobProgress(job.image_id, QUEUED, 0, job.size)
        if (why := self._credentials.waiting_for(job.image_id)) is not None:
            return replace(progress, state=NEEDS_CREDENTIALS, why=f"{why}; queue it again")
        if (trouble := self._trouble.get(job.image_id)) is not None and trouble[1] > now:
            return replace(progress, state=WAITING, why=f"to be tried again: {trouble[0]}")
        if not self._upstream.uplink.online:
            return replace(progress, state=WAITING, why="for the uplink to the region")
        if self._window is not None and not self._window.allows(now):
            return replace(progress, state=WAITING, why=f"for the window {self._window}")
        return progress

    def _pulse(self) -> None:
        """Wake whoever waits for a change: the workers, join()."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _uplink_back(self) -> None:
        self._pulse()

    def _startable(self) -> str | None:
        """The oldest job that may start now."""
        now = self._clock.now()
        if not self._upstream.uplink.online:
            return None
        if self._window is not None and not self._window.allows(now):
            return None
        for image_id in self._jobs:
            if (
                image_id not in self._running
                and self._trouble.get(image_id, ("", now))[1] <= now
                and self._credentials.waiting_for(image_id) is None
            ):
                return image_id
        return None

    def _next_chance(self) -> float | None:
        """Seconds until a job that may not start now might: the window opens, or a failed
        job's time to be tried again comes; None if only a change can tell."""
        now = self._clock.now()
        if self._window is not None and not self._window.allows(now):
            return self._window.opens_in(now)
        retries = [
            (at - now).total_seconds()
            for image_id, (_, at) in self._trouble.items()
            if image_id not in self._running and at > now
        ]
        return min(retries, default=None)

    async def _next_job(self) -> str:
        while True:
            changed = self._changed
            image_id = self._startable()
            if image_id is not None:
                return image_id
            wait = self._next_chance() if self._jobs else None
            if wait is None:
                await changed.wait()
            else:
                await _first_of(changed.wait(), self._clock.sleep(wait))

    async def _work(self) -> None:
        while True:
            image_id = await self._next_job()
            self._running.add(image_id)
            try:
                await self._run(image_id)
            except RegionTrouble as trouble:
                self._try_again_later(image_id, str(trouble))
            except Exception as exc:  # a full disk, a bug: this worker goes on with the others
                log.exception("The prefetch of image %s failed unexpectedly.", image_id)
                self._try_again_later(image_id, describe(exc))
            finally:
                self._running.discard(image_id)
                self._pulse()

    async def _run(self, image_id: str) -> None:
        runner = await self._runner(image_id)
        if runner is None:
            return
        image = await self._current_record(image_id, runner)
        self._trouble.pop(image_id, None)
        if image is None:
            return
        if self._cache.filling(image_id) is None and await self._cache.lookup(image):
            await self._forget(image_id)
            return
        fill = await self._cache.fill(image, runner.headers)
        if fill is None:
            await self._drop(image_id, "it is larger than the free space the cache can make")
            return
        try:
            await fill.wait_verified()
        except FillFailed as exc:
            if not self._upstream.uplink.online:
                raise RegionTrouble("the uplink went down during its fill") from exc
            await self._drop(image_id, "its fill failed (the fill's own log line says why)")
            return
        log.info("prefetched image %s as %s", image_id, runner.who)
        await self._forget(image_id)

    async def _runner(self, image_id: str) -> Runner | None:
        try:
            return await self._credentials.runner(image_id)
        except KEYSTONE_ERRORS as exc:
            raise RegionTrouble(
                f"the service token could not be had from Keystone ({describe(exc)})"
            ) from exc

    async def _current_record(self, image_id: str, runner: Runner) -> ImageRecord | None:
        """The image's record as the region has it now; None if the job cannot go on (then
        dropped, or waiting for other credentials)."""
        try:
            answer = await self._upstream.fetch(f"/v2/images/{image_id}", runner.headers)
        except _REGION_ERRORS as exc:
            raise RegionTrouble(describe(exc)) from exc
        if answer.status in (401, 403, 404):
            self._credentials.refused(image_id, runner, answer.status)
            why = self._credentials.waiting_for(image_id)
            if why is None:  # other credentials are tried next
                return None
            if answer.status == 404:
                await self._drop(image_id, f"the region has no such image for {runner.who}")
            else:
                log.warning(
                    "The prefetch of image %s waits for credentials: %s. Queue it again "
                    "(glance cache-queue, edgecache warm --queue) to fetch it with yours.",
                    image_id,
                    why,
                )
            return None
        if answer.status != 200:
            raise RegionTrouble(f"the region answered HTTP {answer.status} for its record")
        try:
            image = ImageRecord.from_glance(answer.json())
        except ValueError:
            raise RegionTrouble("the region's answer for its record was not one") from None
        if not image.cacheable:
            await self._drop(image_id, "it is no longer active with a checksum to verify it by")
            return None
        return image

    def _try_again_later(self, image_id: str, trouble: str) -> None:
        """Let the job wait RETRY_AFTER seconds; the same trouble again is not logged again."""
        if image_id not in self._jobs:
            return
        if self._trouble.get(image_id, ("", None))[0] != trouble:
            log.warning(
                "The prefetch of image %s could not go on: %s. It is tried again in %.0f s, or "
                "once the uplink is back if it is down.",
                image_id,
                trouble,
                RETRY_AFTER,
            )
        self._trouble[image_id] = (trouble, self._clock.now() + timedelta(seconds=RETRY_AFTER))

    async def _drop(self, image_id: str, why: str) -> None:
        log.warning(
            "Image %s is no longer queued to be cached: %s. Queue it again once that changes.",
            image_id,
            why,
        )
        await self._forget(image_id)

    async def _forget(self, image_id: str) -> None:
        self._jobs.pop(image_id, None)
        self._trouble.pop(image_id, None)
        self._credentials.release(image_id)
        await self._store.remove(image_id)
        self._pulse()


async def _first_of(*waits: Awaitable[object]) -> None:
    """Wait until one of `waits` is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
