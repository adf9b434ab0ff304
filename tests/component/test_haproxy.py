"""A zone of three edgecache nodes behind HAProxy, with config/haproxy.cfg as shipped, each
node configured with the others as its siblings ([zone] in edgecache.toml)."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.conftest import MiB, UpstreamServer, random_bytes
from tests.fakeglance import FakeGlance
from tests.zonekit import (
    HAPROXY_DENIED,
    ZONE_SECRET,
    Zone,
    download,
    metric,
    raw_request,
    signed,
    status_of,
    wait_for_metric,
)


async def fills(url: str) -> float:
    return await metric(url, "edgecache_fills_started_total")


async def served(url: str) -> float:
    """Image bytes a node sent to clients, from wherever it had them."""
    sources = ("cache", "fill", "upstream")
    return sum(
        [await metric(url, f'edgecache_served_bytes_total{{source="{s}"}}') for s in sources]
    )


async def test_one_region_fetch_per_image_per_zone_and_a_lost_node_moves_only_its_share(
    glance: FakeGlance, zone: Zone
) -> None:
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(MiB // 4), owner="p1") for _ in range(24)]
    for _ in range(3):  # three compute nodes booting every image
        for image in images:
            assert await download(zone.url, image, token) == image.data
    assert all(glance.data_requests[image.id] == 1 for image in images)
    # Images each node fetched from the region (HAProxy may now and then send a request to
    # another node, which then copies the image from its owner, not from the region).
    per_node = {
        name: await metric(url, "edgecache_fetched_bytes_total") // (MiB // 4)
        for name, (_, url) in zone.nodes.items()
    }
    assert sum(per_node.values()) == len(images)
    assert all(count > 0 for count in per_node.values()), per_node  # the hash spreads them

    lost = max(per_node, key=lambda name: per_node[name])
    process, _ = zone.nodes[lost]
    process.kill()
    await process.wait()
    for image in images:  # HAProxy redispatches at once, then its checks take the node out
        assert await download(zone.url, image, token) == image.data
    refetched = sum(glance.data_requests[image.id] - 1 for image in images)
    assert 0 < refetched <= per_node[lost]  # not those a sibling had copied


async def test_a_storm_for_one_cold_image_spreads_over_the_zone_and_crosses_the_wan_once(
    glance: FakeGlance, zone: Zone
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(8 * MiB), owner="p1")
    image.faults.hold_at = 4 * MiB  # the region's stream pauses until every client is in
    clients = [asyncio.create_task(download(zone.url, image, token)) for _ in range(24)]
    urls = [url for _, url in zone.nodes.values()]
    await wait_for_metric(urls, 'edgecache_transfers_in_progress{source="fill"}', 24)
    image.faults.release.set()

    assert all(data == image.data for data in await asyncio.gather(*clients))
    assert glance.data_requests[image.id] == 1
    per_node = {name: await served(url) for name, (_, url) in zone.nodes.items()}
    assert sum(per_node.values()) == 24 * len(image.data)
    assert all(per_node.values()), per_node  # HAProxy's bounded loads spread the storm
    filled = sum([await fills(url) for url in urls])
    assert filled == len(zone.nodes)
    region = sum([await metric(url, "edgecache_fetched_bytes_total") for url in urls])
    siblings = sum([await metric(url, "edgecache_sibling_fetched_bytes_total") for url in urls])
    assert region == len(image.data)
    assert siblings == (filled - 1) * len(image.data)


async def test_every_node_still_asks_glance_about_each_caller(
    glance: FakeGlance, zone: Zone
) -> None:
    owner = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    urls = [url for _, url in zone.nodes.values()]
    for url in urls:  # one node from the region, the others from it
        assert await download(url, image, owner) == image.data
    assert glance.data_requests[image.id] == 1
    assert sum([await metric(url, "edgecache_sibling_fetched_bytes_total") for url in urls]) == (
        2 * len(image.data)
    )

    stranger, reader = glance.add_project("p2"), glance.add_reader("p1")
    for url in [zone.url, *urls]:
        file_url = f"{url}/v2/images/{image.id}/file"
        assert await status_of(file_url, {"X-Auth-Token": stranger}) == 404
        assert await status_of(file_url, {"X-Auth-Token": reader}) == 403
    # The sibling endpoint: never through HAProxy, not on the clients' listener at all (the
    # path goes to Glance like any other), and on its own listener only for requests signed
    # with the zone's secret (which no longer opens it on its own).
    sibling_path = f"/zone/v1/images/{image.id}/file"
    sibling_endpoint = zone.zone_urls["node1"]
    assert await status_of(zone.url + sibling_path, signed(sibling_endpoint, sibling_path)) == 403
    assert await status_of(urls[0] + sibling_path, signed(sibling_endpoint, sibling_path)) == 404
    for headers in (
        {"X-Auth-Token": owner},
        {"X-Edgecache-Zone-Secret": "guess"},
        {"X-Edgecache-Zone-Secret": ZONE_SECRET},
    ):
        assert await status_of(sibling_endpoint + sibling_path, headers) == 403
    assert (
        await status_of(sibling_endpoint + sibling_path, signed(sibling_endpoint, sibling_path))
        == 200
    )


async def test_offline_a_node_without_the_image_takes_it_from_a_sibling(
    glance: FakeGlance, upstream_server: UpstreamServer, zone: Zone
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    (_, holder), (_, lacking) = zone.nodes["node1"], zone.nodes["node2"]
    assert await download(holder, image, token) == image.data
    # node2 learns Glance's answers for this caller and image, but has no copy.
    file_url = f"{lacking}/v2/images/{image.id}/file"
    assert await status_of(file_url, {"X-Auth-Token": token}, "HEAD") == 200

    await upstream_server.stop()
    await status_of(f"{lacking}/versions", {})
    await wait_for_uplink(lacking, "down")
    assert await download(lacking, image, token) == image.data
    assert await metric(lacking, "edgecache_sibling_fetched_bytes_total") == len(image.data)
    assert await metric(lacking, "edgecache_fetched_bytes_total") == 0
    assert await status_of(file_url, {"X-Auth-Token": "unseen-token"}) == 503  # unvalidated


async def test_a_sibling_that_dies_mid_transfer_is_replaced_by_the_region(
    glance: FakeGlance, zone: Zone
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(8 * MiB), owner="p1")
    image.faults.hold_at = 4 * MiB
    (source, source_url), (_, reader_url) = zone.nodes["node1"], zone.nodes["node2"]
    first = asyncio.create_task(download(source_url, image, token))
    await image.faults.reached_hold.wait()
    second = asyncio.create_task(download(reader_url, image, token))
    await wait_for_metric([reader_url], "edgecache_sibling_fetched_bytes_total", 4 * MiB)

    source.kill()
    await source.wait()
    image.faults.release.set()
    assert await second == image.data
    assert isinstance((await asyncio.gather(first, return_exceptions=True))[0], aiohttp.ClientError)
    assert glance.data_requests[image.id] == 2  # node1's stream, and node2's resume
    assert await metric(reader_url, "edgecache_fetched_bytes_total") == 4 * MiB
    assert await metric(reader_url, 'edgecache_fills_total{outcome="completed"}') == 1


async def wait_for_uplink(url: str, state: str) -> None:
    for _ in range(300):
        async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
            if (await resp.json())["uplink"] == state:
                return
        await asyncio.sleep(0.05)  # polling another process's state
    raise AssertionError(f"{url} never reported uplink {state}")


# The sibling endpoint's path as an attacker might write it to get past the front door.
SIBLING_PATH_VARIANTS = [
    "/zone/v1/images/{}/file",
    "/%7Aone/v1/images/{}/file",
    "/%7aone/v1/images/{}/file",
    "/zon%65/v1/images/{}/file",
    "/%5A%4F%4E%45/v1/images/{}/file",
    "/ZONE/v1/images/{}/file",
    "/Zone/v1/images/{}/file",
    "//zone/v1/images/{}/file",
    "/%2Fzone/v1/images/{}/file",
    "/%2fzone/v1/images/{}/file",
    "/./zone/v1/images/{}/file",
    "/%2E/zone/v1/images/{}/file",
    "/.%2Fzone/v1/images/{}/file",
    "/x/../zone/v1/images/{}/file",
    "/x/%2E%2E/zone/v1/images/{}/file",
    "/x/..%2Fzone/v1/images/{}/file",
    "/../zone/v1/images/{}/file",
    "/v2/../zone/v1/images/{}/file",
    "/zone%2Fv1%2Fimages%2F{}%2Ffile",
    "/%2Fzone/v1/images/{}/file%",
]


async def test_no_way_of_writing_the_sibling_path_gets_image_bytes_from_outside(
    glance: FakeGlance, zone: Zone
) -> None:
    owner = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    urls = [url for _, url in zone.nodes.values()]
    for url in urls:  # every node stores it
        assert await download(url, image, owner) == image.data
    canonical, sibling_endpoint = f"/zone/v1/images/{image.id}/file", zone.zone_urls["node1"]
    assert await raw_request(sibling_endpoint, canonical, signed(sibling_endpoint, canonical)) == (
        200,
        image.data,
    )

    for variant in SIBLING_PATH_VARIANTS:
        target = variant.format(image.id)
        secret = {"X-Edgecache-Zone-Secret": ZONE_SECRET}
        for headers in ({}, secret, signed(sibling_endpoint, canonical)):
            status, body = await raw_request(zone.url, target, headers)
            assert (status, HAPROXY_DENIED in body) == (403, True), target
            for url in urls:  # the clients' listener has no sibling endpoint: Glance's 404
                status, body = await raw_request(url, target, headers)
                assert status == 404, (url, target, status)
                assert image.data[:64] not in body
    for allowed in (f"/v2/images/{image.id}/tags/zone", "/v2/images?tag=zone", "/v2/zone"):
        _, body = await raw_request(zone.url, allowed, {"X-Auth-Token": owner})
        assert HAPROXY_DENIED not in body, allowed  # Glance's paths that merely say zone
