"""Shared by the tests of a zone of nodes (test_zone.py, test_haproxy.py): a node's
configuration and what the tests ask of the nodes."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

from edgecache.zone.protocol import ASKER_HEADER
from edgecache.zone.signing import sign
from tests.conftest import SpawnEdgecache, UpstreamServer, free_port
from tests.fakeglance import FakeImage

ZONE_SECRET = "a-secret-of-this-test-zone"
NODE_CONFIG = """
[upstream]
failures_to_offline = 1
probe_interval = 0.1
stall_timeout = 5
read_timeout = 5

[zone]
peers = [{peers}]
self = "{me}"
secret = "{secret}"
listen = "127.0.0.1:{zone_port}"
"""


@dataclass(frozen=True)
class NodePorts:
    """A node's two listeners: the clients' ([server] listen) and the siblings' ([zone] listen)."""

    client: int = field(default_factory=free_port)
    zone: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client}"

    @property
    def zone_url(self) -> str:
        return f"http://127.0.0.1:{self.zone}"


def node_config(node: NodePorts, peers: list[str]) -> str:
    """The [zone] of `node` in a zone of `peers` (zone URLs, this node's among them)."""
    listed = ", ".join(f'"{peer}"' for peer in peers)
    return NODE_CONFIG.format(
        peers=listed, me=node.zone_url, secret=ZONE_SECRET, zone_port=node.zone
    )


async def metric(url: str, sample: str) -> float:
    """One sample of a node's metrics, e.g. `edgecache_fills_started_total` or
    `edgecache_served_bytes_total{source="fill"}`."""
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def download(url: str, image: FakeImage, token: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as r,
    ):
        assert r.status == 200
        return await r.read()


async def status_of(url: str, headers: dict[str, str], method: str = "GET") -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=headers) as r,
    ):
        return r.status


async def wait_for_metric(urls: list[str], sample: str, total: float) -> None:
    """Until the nodes' samples add up to `total`."""
    for _ in range(600):
        if sum([await metric(url, sample) for url in urls]) == total:
            return
        await asyncio.sleep(0.05)  # polling other processes' state
    raise AssertionError(f"{sample} never reached {total}")


def signed(
    node: str,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    method: str = "GET",
    secret: str = ZONE_SECRET,
    asker: str = "http://127.0.0.1:1",
    at: float | None = None,
) -> dict[str, str]:
    """The headers of a sibling request for `path` at `node` (its zone URL), signed as a node
    of the zone signs it."""
    unsigned = {ASKER_HEADER: asker, **(headers or {})}
    return {**unsigned, **sign(secret, method, node + path, unsigned, at=at)}


async def raw_request(
    url: str, target: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, bytes]:
    """Status and body of a request for `target` exactly as written (percent-encodings, dot
    segments and doubled slashes are sent as they are)."""
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, URL(url + target, encoded=True), headers=headers) as response,
    ):
        return response.status, await response.read()


SHIPPED_CONFIG = Path(__file__).parents[1] / "config" / "haproxy.cfg"
HAPROXY_DENIED = b"Request forbidden by administrative rules."


@dataclass
class Zone:
    url: str
    nodes: dict[str, tuple[asyncio.subprocess.Process, str]]  # server name -> (process, url)
    zone_urls: dict[str, str]  # server name -> its sibling endpoint's URL ([zone] listen)


def zone_config(frontend_port: int, nodes: dict[str, str]) -> str:
    """The shipped file with this test's addresses in place of the example ones."""
    text = SHIPPED_CONFIG.read_text()
    text = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind 127.0.0.1:{frontend_port}", text)
    for name, url in nodes.items():
        address = url.removeprefix("http://")
        text = re.sub(rf"server {name} \S+", f"server {name} {address}", text)
    return text


@asynccontextmanager
async def running_zone(
    upstream_server: UpstreamServer, spawn_edgecache: SpawnEdgecache, tmp_path: Path
) -> AsyncIterator[Zone]:
    """Three edgecache nodes behind HAProxy with config/haproxy.cfg as shipped."""
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    assert haproxy, "HAProxy is not installed: apt-get install haproxy (scripts/test.sh does)"
    ports = {name: NodePorts() for name in ("node1", "node2", "node3")}
    peers = [node.zone_url for node in ports.values()]
    nodes = {}
    for name, node in ports.items():
        config = tmp_path / f"{name}.toml"
        config.write_text(node_config(node, peers))
        nodes[name] = await spawn_edgecache(
            upstream_server.url, tmp_path / name, "--config", str(config), port=node.client
        )
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
        await wait_for_all_servers_up(url, len(nodes))
        yield Zone(url, nodes, {name: node.zone_url for name, node in ports.items()})
    finally:
        process.terminate()
        await process.wait()


async def wait_for_all_servers_up(url: str, count: int) -> None:
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
