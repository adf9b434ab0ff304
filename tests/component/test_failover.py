"""Several upstream endpoints: failover when the active one stops answering, and back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import UPSTREAM
from tests.conftest import EdgecacheFactory, MiB, UpstreamServer, random_bytes
from tests.fakeglance import FakeGlance, is_download_check


@pytest.fixture
async def second_server(glance: FakeGlance) -> AsyncIterator[UpstreamServer]:
    """Another glance-api of the same region: same images, another address."""
    server = UpstreamServer(glance)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def two_upstreams(
    make_edgecache: EdgecacheFactory, second_server: UpstreamServer
) -> TestClient:
    return await make_edgecache(fallbacks=(second_server.url,), probe_interval=0.05)


async def test_reads_fail_over_and_come_back_to_the_primary(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    second_server: UpstreamServer,
    two_upstreams: TestClient,
) -> None:
    upstream = two_upstreams.server.app[UPSTREAM]
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    headers = {"X-Auth-Token": token}
    assert upstream.base_url == upstream_server.url
    await upstream_server.stop()
    async with two_upstreams.get(f"/v2/images/{image.id}/file", headers=headers) as resp:
        assert resp.status == 200  # the metadata GET and the fill both went to the fallback
        assert await resp.read() == image.data
    assert upstream.base_url == second_server.url
    assert upstream.uplink.online
    metrics = await (await two_upstreams.get("/metrics")).text()
    assert f'edgecache_upstream_active{{endpoint="{second_server.url}"}} 1.0' in metrics
    await upstream_server.start()
    while upstream.base_url != upstream_server.url:  # the failback probe takes it back
        await upstream.uplink.wait_online(within=0.05)
    async with two_upstreams.get("/v2/images", headers=headers) as resp:
        assert resp.status == 200


async def test_a_write_is_not_repeated_but_the_next_one_goes_to_the_fallback(
    glance: FakeGlance, upstream_server: UpstreamServer, two_upstreams: TestClient
) -> None:
    token = glance.add_project("p1")
    image_id = "5a7c9e2b-1111-4000-8000-000000000000"
    await upstream_server.stop()
    upload = {"X-Auth-Token": token, "Content-Type": "application/octet-stream"}
    async with two_upstreams.put(f"/v2/images/{image_id}/file", data=b"x", headers=upload) as r:
        assert r.status == 503  # sent once, to the endpoint that failed; never replayed
    async with two_upstreams.put(f"/v2/images/{image_id}/file", data=b"x", headers=upload) as r:
        assert r.status == 204
    assert glance.uploads[image_id] == 1


async def test_a_fill_resumes_on_the_fallback(
    glance: FakeGlance, upstream_server: UpstreamServer, two_upstreams: TestClient
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    image.faults.hold_at = MiB
    async with two_upstreams.get(
        f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
    ) as resp:
        head = await resp.content.readexactly(1024)
        await image.faults.reached_hold.wait()
        await upstream_server.stop()
        image.faults.release.set()
        assert head + await resp.read() == image.data
    ranges = [
        h.get("Range")
        for _, path, h in glance.requests
        if path.endswith("/file") and not is_download_check(h)
    ]
    assert ranges[0] is None
    assert ranges[-1] is not None  # the second half came from the fallback, by Range


async def test_offline_only_when_no_endpoint_answers(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    second_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
) -> None:
    edgecache = await make_edgecache(
        fallbacks=(second_server.url,), probe_interval=0.05, failures_to_offline=1
    )
    uplink = edgecache.server.app[UPSTREAM].uplink
    await upstream_server.stop()
    async with edgecache.get("/versions"):
        pass
    assert uplink.online
    await second_server.stop()
    async with edgecache.get("/versions"):
        pass
    assert not uplink.online
    await second_server.start()
    assert await uplink.wait_online(within=30)
