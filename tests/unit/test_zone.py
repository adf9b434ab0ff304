"""Nodes of a zone against siblings that lie or are slow to answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import MiB, SpawnEdgecache, UpstreamServer, free_port, random_bytes
from tests.fakeglance import FakeGlance
from tests.unit.test_haproxy import NODE_CONFIG, ZONE_SECRET, download, metric


def lying_sibling(size: int) -> web.Application:
    """Claims a stored copy of every image and sends `size` bytes of zeros for it."""

    async def sibling_file(request: web.Request) -> web.StreamResponse:
        assert request.headers["X-Edgecache-Zone-Secret"] == ZONE_SECRET
        headers = {"X-Edgecache-Zone-Copy": "stored", "X-Edgecache-Zone-Depth": "0"}
        response = web.StreamResponse(headers=headers)
        response.content_length = size
        await response.prepare(request)
        if request.method != "HEAD":
            await response.write(bytes(size))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_route("*", "/zone/v1/images/{image_id}/file", sibling_file)
    return app


async def test_bytes_from_a_sibling_are_verified_like_the_regions(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    tmp_path: Path,
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    runner = web.AppRunner(lying_sibling(len(image.data)))
    await runner.setup()
    liar_port, port = free_port(), free_port()
    await web.TCPSite(runner, "127.0.0.1", liar_port).start()
    me, liar = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{liar_port}"
    config = tmp_path / "node.toml"
    config.write_text(NODE_CONFIG.format(peers=f'"{me}", "{liar}"', me=me, secret=ZONE_SECRET))
    try:
        _, url = await spawn_edgecache(
            upstream_server.url, tmp_path / "node", "--config", str(config), port=port
        )
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.get(
                    f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
                ) as response:
                    await response.read()
        assert await metric(url, "edgecache_verification_failures_total") == 1
        assert await metric(url, "edgecache_sibling_fetched_bytes_total") == len(image.data)
        assert not (tmp_path / "node" / "blobs" / image.id).exists()
        assert glance.data_requests[image.id] == 0
    finally:
        await runner.cleanup()


def slow_sibling(askers: int, first_asked: asyncio.Event) -> web.Application:
    """Has nothing, and says so only once `askers` look-ups are waiting for its answer: the
    nodes asking it are all still choosing their source meanwhile."""
    everyone_asked = asyncio.Event()
    waiting = 0

    async def sibling_file(request: web.Request) -> web.Response:
        nonlocal waiting
        waiting += 1
        first_asked.set()
        if waiting == askers:
            everyone_asked.set()
        await everyone_asked.wait()
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/zone/v1/images/{image_id}/file", sibling_file)
    return app


@pytest.mark.parametrize("first", ["earlier", "later"])
async def test_two_nodes_missing_an_image_at_once_fetch_it_from_the_region_once(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    tmp_path: Path,
    first: str,
) -> None:
    """Whichever node of the two (earlier or later in peers) misses first, the other misses
    while it is still choosing its source; the later one takes the image from the earlier."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    first_asked = asyncio.Event()
    runner = web.AppRunner(slow_sibling(askers=2, first_asked=first_asked))
    await runner.setup()
    ports = [free_port(), free_port(), free_port()]
    await web.TCPSite(runner, "127.0.0.1", ports[2]).start()
    peers = [f"http://127.0.0.1:{port}" for port in ports]
    listed = ", ".join(f'"{peer}"' for peer in peers)
    try:
        urls = []
        for number, (peer, port) in enumerate(zip(peers[:2], ports, strict=False)):
            config = tmp_path / f"node{number}.toml"
            config.write_text(NODE_CONFIG.format(peers=listed, me=peer, secret=ZONE_SECRET))
            _, url = await spawn_edgecache(
                upstream_server.url, tmp_path / f"node{number}", "--config", str(config), port=port
            )
            urls.append(url)
        # The first node's look-ups wait at the slow sibling while the second one misses.
        earlier, later = urls
        first_url, second_url = (earlier, later) if first == "earlier" else (later, earlier)
        first_download = asyncio.create_task(download(first_url, image, token))
        await first_asked.wait()
        assert await download(second_url, image, token) == image.data
        assert await first_download == image.data
        assert glance.data_requests[image.id] == 1
        assert await metric(later, "edgecache_sibling_fetched_bytes_total") == len(image.data)
    finally:
        await runner.cleanup()
