"""One memory budget for all fills together ([cache] fill_memory)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from edgecache.appkeys import CACHE
from edgecache.store import fill as fill_module
from edgecache.store.fillmemory import FillMemory
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance, FakeImage


def gauge() -> Gauge:
    return Gauge("in_use", "bytes held", registry=CollectorRegistry())


async def test_takers_wait_in_turn_and_never_exceed_the_limit() -> None:
    memory = FillMemory(100, gauge())
    await memory.take(60)
    big = asyncio.create_task(memory.take(50))
    small = asyncio.create_task(memory.take(10))  # would fit, but comes after a waiter
    await asyncio.sleep(0)  # let both reach their wait
    assert memory.waiting() == 2
    assert memory.in_use == 60
    memory.give_back(60)
    await asyncio.gather(big, small)
    assert memory.in_use == 60


async def test_a_cancelled_taker_holds_nothing_and_lets_the_next_one_in() -> None:
    memory = FillMemory(100, gauge())
    await memory.take(90)
    blocked = asyncio.create_task(memory.take(50))
    behind = asyncio.create_task(memory.take(10))
    await asyncio.sleep(0)  # let both reach their wait
    blocked.cancel()
    await behind
    assert memory.in_use == 100
    assert memory.waiting() == 0
    with pytest.raises(asyncio.CancelledError):
        await blocked


async def gauges(client: TestClient) -> dict[str, float]:
    async with client.get("/metrics") as resp:
        text = await resp.text()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def read(client: TestClient, image: FakeImage, token: str) -> bytes:
    async with client.get(f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        return await resp.read()


async def test_fills_together_never_hold_more_than_the_budget(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four fills whose writes are held up: each alone would gather up to 12 MiB; together
    they hold no more than fill_memory. Bytes held are counted as they are handed to a fill
    and until every lane is done with them, independently of the budget's own count."""
    budget = MiB
    edgecache = await make_edgecache(fill_memory=budget, max_size=64 * MiB)
    memory = edgecache.server.app[CACHE].fills._memory
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(8 * MiB), owner="p1") for _ in range(4)]

    held = peak = 0
    writes_may_go_on = threading.Event()
    all_waiting = asyncio.Event()
    takers_waiting = 0
    add, absorb, write = (
        fill_module._Intake.add,
        fill_module.Fill.absorb,
        fill_module.Fill._write_and_chunk,
    )
    take = memory.take

    async def counted_add(intake: fill_module._Intake, piece: bytes) -> None:
        nonlocal held, peak
        held += len(piece)
        peak = max(peak, held)
        await add(intake, piece)

    def counted_absorb(
        fill: fill_module.Fill, batch: list[bytes]
    ) -> tuple[asyncio.Future[None], asyncio.Future[list[None]]]:
        written, processed = absorb(fill, batch)
        size = sum(len(piece) for piece in batch)

        def done(_: object) -> None:
            nonlocal held
            held -= size

        processed.add_done_callback(done)
        return written, processed

    def held_up_write(fill: fill_module.Fill, batch: list[bytes], offset: int) -> None:
        writes_may_go_on.wait()
        write(fill, batch, offset)

    async def noted_take(size: int) -> None:
        nonlocal takers_waiting
        waits = memory.waiting() > 0 or memory.in_use + size > memory.limit
        takers_waiting += waits
        if takers_waiting == len(images):
            all_waiting.set()
        try:
            await take(size)
        finally:
            takers_waiting -= waits

    monkeypatch.setattr(fill_module._Intake, "add", counted_add)
    monkeypatch.setattr(fill_module.Fill, "absorb", counted_absorb)
    monkeypatch.setattr(fill_module.Fill, "_write_and_chunk", held_up_write)
    monkeypatch.setattr(memory, "take", noted_take)
    reads = [asyncio.create_task(read(edgecache, image, token)) for image in images]
    try:
        async with asyncio.timeout(60):  # a guard: without the budget nobody ever waits
            await all_waiting.wait()  # the budget is spent and every fill waits for room
        metrics = await gauges(edgecache)
        assert 0 < peak <= budget
        assert memory.in_use <= budget
        assert metrics["edgecache_fill_memory_bytes"] == memory.in_use
        assert metrics["edgecache_fill_memory_limit_bytes"] == budget
    finally:
        writes_may_go_on.set()  # never leave a worker thread blocked
        bodies = await asyncio.gather(*reads, return_exceptions=True)
    assert bodies == [image.data for image in images]
    assert peak <= budget
    assert held == 0
    assert memory.in_use == 0
