"""Ordered lanes of blocking work on a shared thread pool.

A fill writes, chunk-hashes and Glance-hashes the same bytes. Each of those must see the bytes
in order, but none needs to wait for the others: a lane runs its jobs one at a time in the
order they were given, and different lanes run side by side. So the file can be written a
batch ahead of sha512 while the event loop receives the next batch.

A lane's jobs follow each other on the worker thread itself: a busy event loop never holds
up the next write, it only learns later that the earlier ones are done.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor


class LaneStopped(Exception):
    """An earlier job of the lane failed, so this one was not run."""


class _Lane:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: deque[tuple[Callable[[], None], asyncio.Future[None]]] = deque()
        self.draining = False
        self.failure: BaseException | None = None


class Lanes:
    def __init__(self, executor: Executor, count: int) -> None:
        self._executor = executor
        self._lanes = [_Lane() for _ in range(count)]
        self._drains: list[concurrent.futures.Future[None]] = []

    def submit(self, lane: int, job: Callable[[], None]) -> asyncio.Future[None]:
        """Run `job` after the lane's earlier jobs; its future says how it ended. A lane stops
        at its first failure: later jobs are not run and fail with LaneStopped."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        chosen = self._lanes[lane]
        with chosen.lock:
            chosen.jobs.append((job, future))
            start = not chosen.draining
            chosen.draining = True
        if start:
            self._drains = [drain for drain in self._drains if not drain.done()]
            self._drains.append(self._executor.submit(_drain, chosen, loop))
        return future

    async def settle(self) -> None:
        """Wait until no job runs on a thread any more, or ever will: whatever the jobs use
        (a file descriptor) must outlive them, cancelled or not."""
        running = [asyncio.wrap_future(drain) for drain in self._drains if not drain.done()]
        if running:
            await asyncio.wait(running)


def _drain(lane: _Lane, loop: asyncio.AbstractEventLoop) -> None:
    """Run the lane's jobs back to back until none is left (on a worker thread)."""
    while True:
        with lane.lock:
            if not lane.jobs:
                lane.draining = False
                return
            job, future = lane.jobs.popleft()
        error: BaseException | None = None
        if lane.failure is not None:
            error = LaneStopped(f"an earlier job of this lane failed: {lane.failure!r}")
        else:
            try:
                job()
            except BaseException as exc:  # handed to whoever awaits the job
                error = lane.failure = exc
        loop.call_soon_threadsafe(_report, future, error)


def _report(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
