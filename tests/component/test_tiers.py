"""Three tiers of real processes: region (Glance) <- edge site <- far-edge cloudlet."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import MiB, SpawnEdgecache, UpstreamServer, free_port, random_bytes
from tests.fakeglance import FakeGlance

TIER_CONFIG = """
[upstream]
failures_to_offline = 1
probe_interval = 0.1
stall_timeout = 5
read_timeout = 5
"""


@dataclass
class Chain:
    edge: str
    cloudlet: str
    edge_port: int
    edge_dir: Path
    config: Path
    edge_process: asyncio.subprocess.Process


async def metric(url: str, name: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def get(url: str, token: str | None) -> tuple[int, bytes, str]:
    headers = {"X-Auth-Token": token} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.read(), resp.headers.get("X-Edgecache-Source", "")


async def uplink(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
        return str((await resp.json())["uplink"])


async def wait_for_uplink(url: str, state: str) -> None:
    for _ in range(300):
        if await uplink(url) == state:
            return
        await asyncio.sleep(0.05)  # polling another process's state
    raise AssertionError(f"{url} never reported uplink {state}")


@pytest.fixture
async def chain(
    upstream_server: UpstreamServer, spawn_edgecache: SpawnEdgecache, tmp_path: Path
) -> Chain:
    config = tmp_path / "tier.toml"
    config.write_text(TIER_CONFIG)
    edge_port = free_port()
    edge_process, edge = await spawn_edgecache(
        upstream_server.url, tmp_path / "edge", "--config", str(config), port=edge_port
    )
    _, cloudlet = await spawn_edgecache(edge, tmp_path / "cloudlet", "--config", str(config))
    return Chain(edge, cloudlet, edge_port, tmp_path / "edge", config, edge_process)


async def test_a_burst_at_the_cloudlet_costs_one_fetch_per_tier(
    glance: FakeGlance, chain: Chain
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(8 * MiB), owner="p1")
    image.faults.hold_at = 4 * MiB  # keep the region's stream open while the burst arrives
    url = f"{chain.cloudlet}/v2/images/{image.id}/file"
    burst = [asyncio.create_task(get(url, token)) for _ in range(8)]
    await image.faults.reached_hold.wait()
    image.faults.release.set()
    answers = await asyncio.gather(*burst)
    assert all(status == 200 and body == image.data for status, body, _ in answers)
    assert glance.data_requests[image.id] == 1
    assert await metric(chain.edge, "edgecache_fills_started_total") == 1
    assert await metric(chain.cloudlet, "edgecache_fills_started_total") == 1
    assert (await get(url, token))[2] == "cache"


async def test_glance_at_the_top_decides_who_sees_what(glance: FakeGlance, chain: Chain) -> None:
    owner, other = glance.add_project("p1"), glance.add_project("p2")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    url = f"{chain.cloudlet}/v2/images/{image.id}/file"
    assert (await get(url, owner))[:2] == (200, image.data)
    for token, status in ((other, 404), (None, 401), ("forged", 401)):
        answer = await get(url, token)
        assert answer[0] == status
        assert image.data[:64] not in answer[1]


async def test_every_tier_verifies_what_it_stores(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    tmp_path: Path,
) -> None:
    """An edge that serves a rotten copy (its read verification off) never gets it into the
    cloudlet: the cloudlet checks the bytes against Glance's checksum itself."""
    careless = tmp_path / "careless.toml"
    careless.write_text(TIER_CONFIG + "[cache]\nverify_reads = false\n")
    _, edge = await spawn_edgecache(upstream_server.url, tmp_path / "e", "--config", str(careless))
    _, cloudlet = await spawn_edgecache(edge, tmp_path / "c", "--config", str(careless))
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    assert (await get(f"{edge}/v2/images/{image.id}/file", token))[:2] == (200, image.data)
    blob = tmp_path / "e" / "blobs" / image.id
    rotten = bytearray(blob.read_bytes())
    rotten[12345] ^= 0xFF
    blob.write_bytes(bytes(rotten))
    for _ in range(2):
        with pytest.raises(aiohttp.ClientPayloadError):
            await get(f"{cloudlet}/v2/images/{image.id}/file", token)
    assert await metric(cloudlet, "edgecache_verification_failures_total") == 2
    assert not (tmp_path / "c" / "blobs" / image.id).exists()


async def test_offline_at_either_link(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    chain: Chain,
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    data_url = f"{chain.cloudlet}/v2/images/{image.id}/file"
    record_url = f"{chain.cloudlet}/v2/images/{image.id}"
    assert (await get(data_url, token))[:2] == (200, image.data)
    assert (await get(record_url, token))[0] == 200

    # The region is cut off from the edge: the edge answers from its cache, the cloudlet
    # keeps talking to the edge as usual.
    await upstream_server.stop()
    await get(f"{chain.edge}/versions", None)
    await wait_for_uplink(chain.edge, "down")
    assert (await get(data_url, token))[:2] == (200, image.data)
    assert (await get(record_url, token))[0] == 200
    assert await uplink(chain.cloudlet) == "up"

    # Now the cloudlet is cut off from the edge too: it answers from its own cache.
    chain.edge_process.kill()
    await chain.edge_process.wait()
    await get(f"{chain.cloudlet}/versions", None)
    await wait_for_uplink(chain.cloudlet, "down")
    assert (await get(data_url, token))[:2] == (200, image.data)
    assert (await get(record_url, token))[0] == 200
    assert (await get(data_url, "unseen-token"))[0] == 503  # cannot be validated now

    # Both links come back; both tiers go back online on their own.
    await upstream_server.start()
    await spawn_edgecache(
        upstream_server.url,
        chain.edge_dir,
        "--config",
        str(chain.config),
        port=chain.edge_port,
    )
    await wait_for_uplink(chain.cloudlet, "up")
    await wait_for_uplink(chain.edge, "up")
    assert (await get(data_url, token))[:2] == (200, image.data)
