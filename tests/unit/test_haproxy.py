"""A zone of three edgecache nodes behind HAProxy, with config/haproxy.cfg as shipped."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import MiB, SpawnEdgecache, UpstreamServer, free_port, random_bytes
from tests.fakeglance import FakeGlance, FakeImage

SHIPPED_CONFIG = Path(__file__).parents[2] / "config" / "haproxy.cfg"


@dataclass
class Zone:
    url: str
    nodes: dict[str, tuple[asyncio.subprocess.Process, str]]  # server name -> (process, url)


def zone_config(frontend_port: int, nodes: dict[str, str]) -> str:
    """The shipped file with this test's addresses in place of the example ones."""
    text = SHIPPED_CONFIG.read_text()
    text = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{frontend_port}", text)
    for name, url in nodes.items():
        address = url.removeprefix("http://")
        text = re.sub(rf"server {name} \S+", f"server {name} {address}", text)
    return text


async def fills(url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(r"^edgecache_fills_started_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def download(url: str, image: FakeImage, token: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as r,
    ):
        assert r.status == 200
        return await r.read()


@pytest.fixture
async def zone(
    upstream_server: UpstreamServer, spawn_edgecache: SpawnEdgecache, tmp_path: Path
) -> AsyncIterator[Zone]:
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    assert haproxy, "HAProxy is not installed: apt-get install haproxy (scripts/test.sh does)"
    nodes = {}
    for name in ("node1", "node2", "node3"):
        nodes[name] = await spawn_edgecache(upstream_server.url, tmp_path / name)
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(zone_config(port, {name: url for name, (_, url) in nodes.items()}))
    check = await asyncio.create_subprocess_exec(haproxy, "-c", "-f", str(config))
    assert await check.wait() == 0, "config/haproxy.cfg does not pass haproxy -c"
    process = await asyncio.create_subprocess_exec(
        haproxy, "-db", "-f", str(config), stdout=asyncio.subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_for_all_servers_up(url, len(nodes))
        yield Zone(url, nodes)
    finally:
        process.terminate()
        await process.wait()


async def _wait_for_all_servers_up(url: str, count: int) -> None:
    """HAProxy answers as soon as it binds; its health checks need a moment to pass."""
    async with aiohttp.ClientSession() as session:
        for _ in range(400):
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)  # polling another process's readiness
    raise TimeoutError("HAProxy never routed to an edgecache node")


async def test_one_fill_per_image_per_zone_and_a_lost_node_moves_only_its_share(
    glance: FakeGlance, zone: Zone
) -> None:
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(MiB // 4), owner="p1") for _ in range(24)]
    for _ in range(3):  # three compute nodes booting every image
        for image in images:
            assert await download(zone.url, image, token) == image.data
    assert all(glance.data_requests[image.id] == 1 for image in images)
    per_node = {name: await fills(url) for name, (_, url) in zone.nodes.items()}
    assert sum(per_node.values()) == len(images)
    assert all(count > 0 for count in per_node.values()), per_node  # the hash spreads them

    lost = max(per_node, key=lambda name: per_node[name])
    process, _ = zone.nodes[lost]
    process.kill()
    await process.wait()
    for image in images:  # HAProxy redispatches at once, then its checks take the node out
        assert await download(zone.url, image, token) == image.data
    refetched = sum(glance.data_requests[image.id] - 1 for image in images)
    assert refetched == per_node[lost]
