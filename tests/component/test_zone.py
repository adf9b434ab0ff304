"""Nodes of a zone against siblings that lie or are slow to answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgecache.zone.signing import SignatureCheck
from tests.conftest import MiB, SpawnEdgecache, UpstreamServer, free_port, random_bytes
from tests.fakeglance import FakeGlance
from tests.zonekit import ZONE_SECRET, NodePorts, download, metric, node_config


def lying_sibling(url: str, size: int) -> web.Application:
    """Claims a stored copy of every image and sends `size` bytes of zeros for it."""
    signatures = SignatureCheck(ZONE_SECRET, url)

    async def sibling_file(request: web.Request) -> web.StreamResponse:
        assert signatures.refusal(request.method, request.raw_path, request.headers) is None
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
    liar_port, node = free_port(), NodePorts()
    liar = f"http://127.0.0.1:{liar_port}"
    runner = web.AppRunner(lying_sibling(liar, len(image.data)))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", liar_port).start()
    config = tmp_path / "node.toml"
    config.write_text(node_config(node, [node.zone_url, liar]))
    try:
        _, url = await spawn_edgecache(
            upstream_server.url, tmp_path / "node", "--config", str(config), port=node.client
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


def slow_sibling(first_asked: asyncio.Event, answer_first: asyncio.Event | None) -> web.Application:
    """Has nothing, and says so to the first node that asks only once a second one asks too
    and `answer_first` (if given) is set; to the second at once. Both nodes are then still
    choosing their source when they look each other up."""
    second_asked = asyncio.Event()
    askers = 0

    async def sibling_file(request: web.Request) -> web.Response:
        nonlocal askers
        askers += 1
        if askers == 1:
            first_asked.set()
            await second_asked.wait()
            if answer_first is not None:
                await answer_first.wait()
        else:
            second_asked.set()
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
    # When the later node misses first, it must still be choosing when the earlier one asks it
    # (and hears "not here"): so it hears from the slow sibling only once the earlier one has
    # gone to the region. The earlier node, missing first, makes the later one wait for its
    # choice (endpoint.py), so the slow sibling must not hold its answer to it beyond that.
    answer_first = None
    if first == "later":
        image.faults.hold_at, answer_first = 0, image.faults.reached_hold
        image.faults.release.set()
    runner = web.AppRunner(slow_sibling(first_asked, answer_first))
    await runner.setup()
    nodes, slow_port = [NodePorts(), NodePorts()], free_port()
    await web.TCPSite(runner, "127.0.0.1", slow_port).start()
    peers = [*(node.zone_url for node in nodes), f"http://127.0.0.1:{slow_port}"]
    try:
        urls = []
        for number, node in enumerate(nodes):
            config = tmp_path / f"node{number}.toml"
            config.write_text(node_config(node, peers))
            _, url = await spawn_edgecache(
                upstream_server.url,
                tmp_path / f"node{number}",
                "--config",
                str(config),
                port=node.client,
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
