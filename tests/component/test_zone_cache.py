"""Glance's cache API for the zone as one, through config/haproxy.cfg with three real nodes:
the listing shows every node's images and which node holds each, an image is queued once per
zone, and removals reach every node."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import aiohttp

from tests.conftest import MiB, random_bytes
from tests.fakeglance import ADMIN_TOKEN, FakeGlance
from tests.stack.install import ensure_stack_venv
from tests.zonekit import HAPROXY_DENIED, Zone, download, raw_request, signed, status_of

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
NODES = "edgecache_nodes"


async def cache_api(
    url: str, method: str = "GET", path: str = "/v2/cache", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url + path, headers={**ADMIN, **(headers or {})}) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def listing(url: str) -> dict[str, Any]:
    status, body = await cache_api(url)
    assert status == 200
    assert set(body) == {"cached_images", "queued_images"}  # what glanceclient prints
    listed: dict[str, Any] = body
    return listed


async def holders(url: str) -> dict[str, list[str]]:
    """image id -> the nodes (zone URLs) that hold a copy, from GET /v2/cache at `url`."""
    return {
        entry["image_id"]: sorted(entry[NODES]) for entry in (await listing(url))["cached_images"]
    }


async def node_holdings(zone: Zone, name: str) -> dict[str, Any]:
    """One node's own holdings, as a sibling asks for them on its zone listener."""
    node, path = zone.zone_urls[name], "/zone/v1/cache"
    async with (
        aiohttp.ClientSession() as session,
        session.get(node + path, headers=signed(node, path)) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def test_the_listing_shows_the_zones_images_and_which_node_holds_each(
    glance: FakeGlance, zone: Zone
) -> None:
    glance.cache_enabled = True  # Glance's cache_list lets admins list
    token = glance.add_project("p1")
    images = {name: glance.add_image(random_bytes(MiB // 4), owner="p1") for name in zone.nodes}
    both = glance.add_image(random_bytes(MiB // 4), owner="p1")
    for name, (_, url) in zone.nodes.items():
        assert await download(url, images[name], token) == images[name].data
    for name in ("node1", "node2"):
        assert await download(zone.nodes[name][1], both, token) == both.data

    expected = {
        **{images[name].id: [zone.zone_urls[name]] for name in zone.nodes},
        both.id: sorted([zone.zone_urls["node1"], zone.zone_urls["node2"]]),
    }
    for url in [zone.url, *(url for _, url in zone.nodes.values())]:
        assert await holders(url) == expected, url
    entry = next(e for e in (await listing(zone.url))["cached_images"] if e["image_id"] == both.id)
    assert entry["size"] == MiB // 4
    assert entry["hits"] == 0  # each node's hits added up: none read a stored copy yet

    rows = glance_cache_list(zone.url)
    assert rows == {image_id: "cached" for image_id in expected}

    # A node's own list is on its zone listener only, for signed requests.
    path = "/zone/v1/cache"
    assert (await node_holdings(zone, "node3"))["copies"][0]["image_id"] == images["node3"].id
    assert await status_of(zone.zone_urls["node3"] + path, ADMIN) == 403
    status, body = await raw_request(zone.url, path, signed(zone.zone_urls["node3"], path))
    assert (status, HAPROXY_DENIED in body) == (403, True)
    assert await status_of(zone.nodes["node3"][1] + path, ADMIN) == 404  # Glance's


def glance_cache_list(url: str) -> dict[str, str]:
    """python-glanceclient's `glance cache-list` (the stack's venv) against `url`, as
    {image id: state}."""
    glance = ensure_stack_venv() / "bin" / "glance"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    result = subprocess.run(
        [str(glance), "--os-image-url", url, "--os-auth-token", ADMIN_TOKEN, "cache-list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] != "ID":
            rows[cells[0]] = cells[1]
    return rows


async def test_an_image_is_queued_once_per_zone(glance: FakeGlance, zone: Zone) -> None:
    glance.cache_enabled = True
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    image.faults.hold_at = MiB
    status, _ = await cache_api(zone.url, "PUT", f"/v2/cache/{image.id}")
    assert status == 202
    await image.faults.reached_hold.wait()
    for _, url in zone.nodes.values():  # wherever HAProxy would have sent it
        status, _ = await cache_api(url, "PUT", f"/v2/cache/{image.id}")
        assert status == 202
    jobs = {name: (await node_holdings(zone, name))["jobs"] for name in zone.nodes}
    owners = [name for name, queued in jobs.items() if image.id in queued]
    assert len(owners) == 1, jobs
    assert (await listing(zone.url))["queued_images"] == [image.id]

    image.faults.release.set()
    for _ in range(600):
        if image.id in await holders(zone.url):
            break
        await asyncio.sleep(0.05)  # polling other processes' state
    assert await holders(zone.url) == {image.id: [zone.zone_urls[owners[0]]]}
    status, _ = await cache_api(zone.nodes["node1"][1], "PUT", f"/v2/cache/{image.id}")
    assert status == 202
    for name in zone.nodes:
        assert (await node_holdings(zone, name))["jobs"] in ({}, {image.id: "running"})
    assert glance.data_requests[image.id] == 1


async def test_removals_reach_every_node(glance: FakeGlance, zone: Zone) -> None:
    glance.cache_enabled = True
    token = glance.add_project("p1")
    shared, single = (glance.add_image(random_bytes(MiB // 4), owner="p1") for _ in range(2))
    for name in ("node1", "node2", "node3"):
        assert await download(zone.nodes[name][1], shared, token) == shared.data
    assert await download(zone.nodes["node3"][1], single, token) == single.data

    status, _ = await cache_api(zone.url, "DELETE", f"/v2/cache/{shared.id}")
    assert status == 204
    assert list(await holders(zone.url)) == [single.id]
    status, _ = await cache_api(zone.nodes["node1"][1], "DELETE", f"/v2/cache/{shared.id}")
    assert status == 404  # on no node any more

    status, _ = await cache_api(
        zone.nodes["node1"][1], "DELETE", headers={"x-image-cache-clear-target": "cache"}
    )
    assert status == 204
    assert await holders(zone.url) == {}
    for name in zone.nodes:
        assert (await node_holdings(zone, name))["copies"] == []


async def test_a_node_that_cannot_be_asked_is_named(glance: FakeGlance, zone: Zone) -> None:
    glance.cache_enabled = True
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB // 4), owner="p1")
    for name in ("node1", "node2"):
        assert await download(zone.nodes[name][1], image, token) == image.data
    process, _ = zone.nodes["node3"]
    process.kill()
    await process.wait()

    assert await holders(zone.nodes["node1"][1]) == {
        image.id: sorted([zone.zone_urls["node1"], zone.zone_urls["node2"]])
    }
    status, body = await cache_api(
        zone.nodes["node1"][1], "DELETE", f"/v2/cache/{image.id}", {"Accept": "application/json"}
    )
    assert status == 503
    assert zone.zone_urls["node3"] in body["message"]
    assert await holders(zone.nodes["node2"][1]) == {}  # the others removed theirs
