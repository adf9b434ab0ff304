"""Fills and the uplink budget, against the in-process fake Glance: a boot's fill goes before
a warm's, a warm a caller joins becomes a boot, and every byte from the region is counted in
its class."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE
from edgecache.config import Settings
from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.store.cache import ImageCache
from edgecache.store.fill import PIECE_SIZE
from edgecache.store.source import RegionSource
from edgecache.transfer.send import LocalBytes
from edgecache.transfer.source import Sources
from edgecache.upstream.budget import BOOT, PREFETCH, Kind, UplinkBudget
from edgecache.upstream.client import Upstream
from tests.conftest import (
    EdgecacheFactory,
    MiB,
    SpawnEdgecache,
    UpstreamServer,
    random_bytes,
)
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage
from tests.zonekit import NodePorts, download, metric, node_config, wait_for_metric

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


@dataclass
class StillClock:
    """Time stands still until the test moves it to the next timer."""

    now: float = 1000.0
    timers: list[tuple[float, Callable[[], object]]] = field(default_factory=list)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> object:
        self.timers.append((when, callback))
        return None

    def to_next_timer(self) -> None:
        self.timers.sort(key=lambda timer: timer[0])
        when, callback = self.timers.pop(0)
        self.now = max(self.now, when)
        callback()


class WatchedBudget(UplinkBudget):
    """Says which class each request was when it was made."""

    def __init__(self, rate: float, metrics: Metrics, clock: StillClock) -> None:
        super().__init__(rate, metrics, clock)
        self.asked: asyncio.Queue[Kind] = asyncio.Queue()

    async def take(self, size: int, kind: Callable[[], Kind]) -> None:
        self.asked.put_nowait(kind())
        await super().take(size, kind)


@dataclass
class Node:
    cache: ImageCache
    metrics: Metrics
    budget: WatchedBudget
    clock: StillClock
    sources: Sources

    def taken(self, kind: Kind) -> float:
        return taken(self.metrics, kind)


@pytest.fixture
async def node(glance_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    """The store and the sources of a node whose budget's clock stands still."""
    settings = Settings(
        upstream=glance_url, cache_dir=tmp_path / "cache", chunk_size=256 * 1024, max_size=64 * MiB
    )
    metrics = Metrics()
    upstream = Upstream(settings, metrics)
    await upstream.start()
    clock = StillClock()
    budget = WatchedBudget(MiB, metrics, clock)
    cache = await ImageCache.open(settings, RegionSource(upstream), metrics, budget)
    sources = Sources(cache=cache, uplink=upstream.uplink, siblings=None, metrics=metrics)
    yield Node(cache, metrics, budget, clock, sources)
    await cache.close()
    await upstream.close()


def record(image: FakeImage) -> ImageRecord:
    return ImageRecord.from_glance(image.record())


def taken(metrics: Metrics, kind: Kind) -> float:
    value = metrics.registry.get_sample_value("edgecache_uplink_bytes_total", {"class": kind})
    return value or 0.0


def prefetch() -> Kind:
    return PREFETCH


async def test_a_boots_fill_gets_bytes_while_a_warm_waits_behind_it(
    glance: FakeGlance, node: Node
) -> None:
    token = glance.add_project("p1")
    warm = [glance.add_image(random_bytes(4 * MiB), owner="p1") for _ in range(2)]
    booting = glance.add_image(random_bytes(2 * MiB), owner="p1")
    await node.budget.take(MiB, prefetch)  # a second of debt: from now on every piece waits
    assert await node.budget.asked.get() == PREFETCH
    for image in warm:  # started as the prefetch queue starts them: no caller waits
        assert await node.cache.fill(record(image), {"X-Auth-Token": token}) is not None
    assert [await node.budget.asked.get() for _ in warm] == [PREFETCH, PREFETCH]
    assert node.budget.waiting() == 2  # each warm fill, with its first piece

    async with node.sources.open(record(booting), None, {"X-Auth-Token": token}) as source:
        assert isinstance(source, LocalBytes)
        assert await node.budget.asked.get() == BOOT  # behind both
        node.clock.to_next_timer()  # the debt is paid off: one piece may be taken
        fill = node.cache.filling(booting.id)
        assert fill is not None
        async with asyncio.timeout(10):  # a failure, should the boot wait behind the warm
            assert await fill.readable_end(0) > 0  # the boot's first piece is on disk
        assert 0 < node.taken(BOOT) <= PIECE_SIZE
        assert node.taken(PREFETCH) == MiB  # the warm is still waiting


async def metric_text(client: TestClient) -> str:
    async with client.get("/metrics") as resp:
        return await resp.text()


def sample(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[-1])


async def test_a_warm_a_caller_joins_takes_the_rest_of_the_image_as_a_boot(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    glance.cache_enabled = True  # Glance's cache policy lets the admin queue images
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(3 * MiB), owner="p1")
    image.faults.hold_at = MiB
    client = await make_edgecache()
    async with client.put(f"/v2/cache/{image.id}", headers=ADMIN) as resp:
        assert resp.status == 202
    await image.faults.reached_hold.wait()
    fill = client.server.app[CACHE].filling(image.id)
    assert fill is not None
    await fill.readable_end(MiB - 1)  # the warm has taken every byte before the hold
    async with client.get(f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp:
        assert resp.headers["X-Edgecache-Source"] == "fill"
        first = await resp.content.readexactly(MiB)  # the caller is reading from the fill
        image.faults.release.set()
        rest = await resp.read()
    assert first + rest == image.data
    text = await metric_text(client)
    assert sample(text, 'edgecache_uplink_bytes_total{class="prefetch"}') == MiB
    assert sample(text, 'edgecache_uplink_bytes_total{class="boot"}') == 2 * MiB
    assert sample(text, "edgecache_fetched_bytes_total") == 3 * MiB
    assert sample(text, "edgecache_uplink_max_rate_bytes") == 0  # no cap: only counted


async def test_the_configured_rate_is_a_metric(make_edgecache: EdgecacheFactory) -> None:
    client = await make_edgecache(max_rate=12_500_000)
    assert sample(await metric_text(client), "edgecache_uplink_max_rate_bytes") == 12_500_000


async def test_a_sibling_reading_a_warm_makes_it_a_boot_and_sibling_bytes_are_not_counted(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    tmp_path: Path,
) -> None:
    """Node a warms an image; node b boots it and takes it from a's fill: the rest of a's
    fill is a boot (b cannot say whether a caller waits for it, so a boot is assumed), and b
    took nothing from the region."""
    glance.cache_enabled = True
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(3 * MiB), owner="p1")
    image.faults.hold_at = MiB
    a, b = NodePorts(), NodePorts()
    for name, node in (("a", a), ("b", b)):
        config = tmp_path / f"{name}.toml"
        config.write_text(node_config(node, [a.zone_url, b.zone_url]))
        await spawn_edgecache(
            upstream_server.url, tmp_path / name, "--config", str(config), port=node.client
        )
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{a.url}/v2/cache/{image.id}", headers=ADMIN) as resp,
    ):
        assert resp.status == 202
    await image.faults.reached_hold.wait()
    await wait_for_metric([a.url], 'edgecache_uplink_bytes_total{class="prefetch"}', MiB)
    booting = asyncio.create_task(download(b.url, image, token))
    await wait_for_metric([a.url], "edgecache_sibling_served_bytes_total", MiB)
    image.faults.release.set()
    assert await booting == image.data
    assert await metric(a.url, 'edgecache_uplink_bytes_total{class="boot"}') == 2 * MiB
    assert await metric(a.url, 'edgecache_uplink_bytes_total{class="prefetch"}') == MiB
    assert await metric(b.url, "edgecache_sibling_fetched_bytes_total") == 3 * MiB
    for kind in (BOOT, PREFETCH):
        assert await metric(b.url, f'edgecache_uplink_bytes_total{{class="{kind}"}}') == 0
    assert glance.data_requests[image.id] == 1
