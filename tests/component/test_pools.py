"""Bounded upstream connections: data streams and metadata requests have separate pools; at the
limit a request waits in line until a deadline, then gets a 503 in Glance's shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from edgecache.metrics import Metrics
from edgecache.upstream.client import pool_for
from edgecache.upstream.pools import DATA_POOL, ConnectionPool, PoolExhausted
from tests.conftest import start_edgecache
from tests.recording_glance import IMAGE_DATA, IMAGE_ID, RecordingGlance, start_recording_glance
from tests.storekit import scrape

TOKEN = {"X-Auth-Token": "token-1"}


def sample(metrics: Metrics, name: str, pool: str) -> float:
    value = metrics.registry.get_sample_value(name, {"pool": pool})
    assert value is not None, name
    return value


async def test_a_full_pool_serves_first_come_first_then_refuses_at_the_deadline() -> None:
    metrics = Metrics()
    pool = ConnectionPool(DATA_POOL, 1, 0.2, metrics)
    order: list[str] = []
    holding, holder_may_leave = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        async with pool.slot():
            order.append("holder")
            holding.set()
            await holder_may_leave.wait()

    async def queue(name: str) -> None:
        async with pool.slot():
            order.append(name)

    holder = asyncio.create_task(hold())
    await holding.wait()
    assert sample(metrics, "edgecache_upstream_connections_in_use", DATA_POOL) == 1
    first, second = asyncio.create_task(queue("first")), asyncio.create_task(queue("second"))
    await asyncio.sleep(0)  # one turn of the loop: both run until they wait in line
    holder_may_leave.set()
    await asyncio.gather(holder, first, second)
    assert order == ["holder", "first", "second"]
    assert sample(metrics, "edgecache_upstream_pool_wait_seconds_count", DATA_POOL) == 2

    holding.clear()
    holder_may_leave.clear()
    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(PoolExhausted, match=r"all 1 upstream connections for image data"):
        await queue("too late")
    holder_may_leave.set()
    await holder
    assert sample(metrics, "edgecache_upstream_pool_refusals_total", DATA_POOL) == 1
    assert sample(metrics, "edgecache_upstream_connections_in_use", DATA_POOL) == 0
    assert sample(metrics, "edgecache_upstream_connection_limit", DATA_POOL) == 1


@pytest.mark.parametrize(
    ("path_qs", "pool"),
    [
        (f"/v2/images/{IMAGE_ID}/file", "data"),
        (f"/v2/images/{IMAGE_ID}/file?x=1", "data"),
        (f"/v2/images/{IMAGE_ID}/stage", "data"),
        (f"/v2/images/{IMAGE_ID}", "metadata"),
        ("/v2/images?name=file", "metadata"),
        (f"/v2/images/{IMAGE_ID}/members", "metadata"),
        ("/versions", "metadata"),
    ],
)
def test_which_pool_a_request_takes(path_qs: str, pool: str) -> None:
    assert pool_for(path_qs) == pool


@pytest.fixture
async def recording() -> AsyncIterator[tuple[RecordingGlance, TestServer]]:
    glance = RecordingGlance()
    server = await start_recording_glance(glance)
    yield glance, server
    await server.close()


async def test_data_streams_cannot_starve_authorizations(
    recording: tuple[RecordingGlance, TestServer], tmp_path: Path
) -> None:
    """Two Range requests hold both data connections; a third is authorized (record GET and
    the one-byte download check, on metadata connections), waits `pool_wait` for a data
    connection and gets a 503 with Retry-After in Glance's JSON shape, while record GETs still
    get through; the uplink stays up; the held transfers complete."""
    glance, upstream = recording
    edge = await start_edgecache(
        str(upstream.make_url("")).rstrip("/"),
        tmp_path / "cache",
        data_connections=2,
        metadata_connections=2,
        pool_wait=0.3,
        max_size=len(IMAGE_DATA) // 2,  # never kept: no fill takes a data connection
    )
    url = str(edge.make_url(f"/v2/images/{IMAGE_ID}/file"))
    ranged = {**TOKEN, "Range": "bytes=0-99", "Accept": "application/json"}
    glance.hold_data()
    async with aiohttp.ClientSession() as client:
        held = [await client.get(url, headers=ranged) for _ in range(2)]
        try:
            assert [response.status for response in held] == [206, 206]  # Glance's answer
            async with client.get(url, headers=ranged) as refused:
                assert refused.status == 503
                assert refused.headers["Retry-After"].isdigit()
                body = json.loads(await refused.read())
            assert body["code"] == "503 Service Unavailable"
            assert "all 2 upstream connections for image data" in body["message"]
            # ...after Glance's download decision, asked on a metadata connection
            checks = [r for r in glance.requests if ("Range", "bytes=0-0") in r.headers]
            assert len(checks) == 3
            for _ in range(5):  # more than metadata_connections, one after the other
                async with client.get(edge.make_url(f"/v2/images/{IMAGE_ID}"), headers=TOKEN) as r:
                    assert r.status == 200
            metrics = await scrape(client, str(edge.make_url("")).rstrip("/"))
            assert metrics["edgecache_upstream_connections_in_use{pool=data}"] == 2
            assert metrics["edgecache_upstream_connections_in_use{pool=metadata}"] == 0
            assert metrics["edgecache_upstream_pool_refusals_total{pool=data}"] == 1
            assert metrics.get("edgecache_upstream_pool_refusals_total{pool=metadata}", 0) == 0
            assert metrics["edgecache_uplink_up"] == 1
        finally:
            glance.release_data()
            bodies = [await response.read() for response in held]
            for response in held:
                response.release()
    await edge.close()
    assert bodies == [IMAGE_DATA[:100], IMAGE_DATA[:100]]
