"""Ordered lanes on a shared pool: order within a lane, stop at the first failure, settle."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgecache.store.lanes import Lanes, LaneStopped


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=4)
    yield pool
    pool.shutdown(wait=True)


async def test_each_lane_keeps_its_order_while_lanes_overlap(executor: ThreadPoolExecutor) -> None:
    lanes = Lanes(executor, 2)
    release_first = threading.Event()
    seen: dict[int, list[int]] = {0: [], 1: []}

    def job(lane: int, number: int) -> None:
        if lane == 0 and number == 0:
            assert release_first.wait(10)
        seen[lane].append(number)

    steps = [
        lanes.submit(lane, lambda lane=lane, n=n: job(lane, n))
        for n in range(50)
        for lane in (0, 1)
    ]
    # Lane 1 finishes everything while lane 0 is held on its first job.
    await asyncio.gather(*steps[1::2])
    assert seen == {0: [], 1: list(range(50))}
    release_first.set()
    await asyncio.gather(*steps[0::2])
    assert seen[0] == list(range(50))


async def test_a_lane_stops_at_its_first_failure(executor: ThreadPoolExecutor) -> None:
    lanes = Lanes(executor, 2)
    ran: list[str] = []

    def broken() -> None:
        raise OSError(28, "No space left on device")

    failing = lanes.submit(0, broken)
    skipped = lanes.submit(0, lambda: ran.append("after the failure"))
    other = lanes.submit(1, lambda: ran.append("other lane"))
    with pytest.raises(OSError, match="No space"):
        await failing
    with pytest.raises(LaneStopped):
        await skipped
    await other
    assert ran == ["other lane"]


async def test_settle_waits_for_a_running_job_whose_awaiter_was_cancelled(
    executor: ThreadPoolExecutor,
) -> None:
    lanes = Lanes(executor, 1)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        assert release.wait(10)
        finished.set()

    step = lanes.submit(0, slow)
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
    step.cancel()
    settling = asyncio.create_task(lanes.settle())
    await asyncio.sleep(0)
    assert not settling.done()
    release.set()
    await settling
    assert finished.is_set()
