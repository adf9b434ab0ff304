"""A bounded soak against a real daemon: 200 concurrent clients (EDGECACHE_SOAK_CLIENTS) for
EDGECACHE_SOAK_SECONDS (default 45) of mixed hits, misses (fills and evictions), ranges, HEADs,
metadata and refusals. Zero errors, every body exact, memory bounded; then a clean shutdown
that leaves a consistent cache."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import MiB, UpstreamServer
from tests.fakeglance import FakeGlance, FakeImage
from tests.reliability.conftest import SOAK_RSS, Reporter
from tests.reliability.daemon import Daemon, Daemons
from tests.reliability.helpers import (
    blob_files,
    download,
    index_rows,
    open_files_under,
    partial_files,
    scrape,
    tcp_connections,
)

SOAK_SECONDS = float(os.environ.get("EDGECACHE_SOAK_SECONDS") or 45)
CLIENTS = int(os.environ.get("EDGECACHE_SOAK_CLIENTS") or 200)
RSS_LIMIT_MIB = 300
CONFIG = {"cache": {"max_size": "16MiB", "chunk_size": "256KiB"}}


class Soak:
    def __init__(self, daemon: Daemon, hot: list[FakeImage], cold: list[FakeImage]) -> None:
        self.daemon = daemon
        self.hot = hot
        self.cold = cold
        self.kinds: Counter[str] = Counter()
        self.sources: Counter[str] = Counter()
        self.errors: list[str] = []
        self.error_count = 0
        self.bytes = 0
        self.peak_rss_kib = 0
        self.rss_samples = 0
        self.peak_upstream = 0

    def fail(self, what: str) -> None:
        self.error_count += 1
        if len(self.errors) < 20:
            self.errors.append(what)

    async def one(
        self, session: aiohttp.ClientSession, rng: random.Random, tokens: dict[str, str]
    ) -> None:
        base = self.daemon.url
        mine = {"X-Auth-Token": tokens["p1"]}
        roll = rng.random()
        if roll < 0.50 or 0.80 <= roll < 0.90:
            image = rng.choice(self.hot if roll < 0.50 else self.cold)
            kind = "hit" if roll < 0.50 else "miss-or-hit"
            outcome = await download(session, f"{base}/v2/images/{image.id}/file", image.data, mine)
            self.kinds[kind] += 1
            self.sources[str(outcome.source)] += 1
            self.bytes += len(outcome.body)
            if outcome.kind != "exact":
                self.fail(f"{kind} {image.id}: {outcome.kind} {outcome.status} {outcome.error}")
            return
        if roll < 0.60:
            image = rng.choice(self.hot)
            start = rng.randrange(len(image.data))
            end = rng.randrange(start, len(image.data))
            expected = image.data[start : end + 1]
            outcome = await download(
                session,
                f"{base}/v2/images/{image.id}/file",
                expected,
                {**mine, "Range": f"bytes={start}-{end}"},
                ok_statuses=(206,),
            )
            self.kinds["range"] += 1
            self.bytes += len(outcome.body)
            if outcome.kind != "exact":
                self.fail(f"range {image.id} {start}-{end}: {outcome.kind} {outcome.status}")
            return
        if roll < 0.66:
            image = rng.choice(self.hot)
            async with session.head(f"{base}/v2/images/{image.id}/file", headers=mine) as resp:
                self.kinds["head"] += 1
                if resp.status != 200 or resp.content_length != len(image.data):
                    self.fail(f"head {image.id}: {resp.status} {resp.content_length}")
            return
        if roll < 0.76:
            image = rng.choice(self.hot + self.cold)
            async with session.get(f"{base}/v2/images/{image.id}", headers=mine) as resp:
                body = await resp.json() if resp.status == 200 else None
                self.kinds["record"] += 1
                if body is None or body.get("id") != image.id:
                    self.fail(f"record {image.id}: {resp.status}")
            return
        if roll < 0.80:
            path = rng.choice(["/v2/images", "/versions", "/v2/schemas/image", "/healthz"])
            async with session.get(base + path, headers=mine) as resp:
                await resp.read()
                self.kinds["document"] += 1
                if resp.status not in (200, 300):
                    self.fail(f"{path}: {resp.status}")
            return
        image = rng.choice(self.hot)  # another project asks for p1's private image
        async with session.get(
            f"{base}/v2/images/{image.id}/file", headers={"X-Auth-Token": tokens["p2"]}
        ) as resp:
            body = await resp.read()
            self.kinds["refused"] += 1
            if resp.status != 404 or image.data[:64] in body:
                self.fail(f"refusal {image.id}: {resp.status}")

    async def client(self, number: int, seed: int, tokens: dict[str, str], until: float) -> None:
        rng = random.Random(seed + number)
        connector = aiohttp.TCPConnector(limit=2)
        async with aiohttp.ClientSession(connector=connector) as session:
            while time.monotonic() < until:
                try:
                    await self.one(session, rng, tokens)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    self.fail(f"client {number}: {exc!r}")

    async def sample_process(self, until: float) -> None:
        """Peak memory, and peak connections to the upstream (bounded by its two pools)."""
        port = int(self.daemon.url.rsplit(":", 1)[1])
        while time.monotonic() < until:
            rss = self.daemon.rss_kib()
            if rss is not None:
                self.peak_rss_kib = max(self.peak_rss_kib, rss)
                self.rss_samples += 1
            self.peak_upstream = max(self.peak_upstream, tcp_connections(self.daemon.pid, port)[1])
            await asyncio.sleep(0.25)  # the sampling period


async def after_clients_left(daemon: Daemon) -> tuple[int, int, int]:
    """(client connections, upstream connections, open blob or partial files) once the clients
    have gone: the daemon sees each close a moment after the client makes it (polled, bounded).
    Upstream connections stay pooled for the client's keep-alive time; they are reported."""
    port = int(daemon.url.rsplit(":", 1)[1])
    for _ in range(100):
        inbound, outbound = tcp_connections(daemon.pid, port)
        files = open_files_under(daemon.cache_dir / "blobs", daemon.pid)
        files += open_files_under(daemon.cache_dir / "incoming", daemon.pid)
        if inbound == 0 and not files:
            break
        await asyncio.sleep(0.05)
    return inbound, outbound, len(files)


def _pool(metrics: dict[str, float], name: str, pool: str) -> str:
    return f"{metrics.get(f'edgecache_upstream_pool_{name}{{pool={pool}}}', 0):.0f}"


async def test_soak(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    seed: int,
    figures: Reporter,
) -> None:
    rng = random.Random(seed)
    tokens = {"p1": glance.add_project("p1"), "p2": glance.add_project("p2")}
    hot = [
        glance.add_image(rng.randbytes(rng.randrange(64 << 10, MiB)), owner="p1") for _ in range(12)
    ]
    cold = [
        glance.add_image(rng.randbytes(rng.randrange(64 << 10, 256 << 10)), owner="p1")
        for _ in range(150)
    ]
    cache_dir = tmp_path / "cache"
    daemon = await daemons.start(upstream_server.url, cache_dir, CONFIG)
    async with aiohttp.ClientSession() as session:
        for image in hot:
            url = f"{daemon.url}/v2/images/{image.id}/file"
            assert (
                await download(session, url, image.data, {"X-Auth-Token": tokens["p1"]})
            ).kind == "exact"
    soak = Soak(daemon, hot, cold)
    started = time.monotonic()
    until = started + SOAK_SECONDS
    sampler = asyncio.create_task(soak.sample_process(until))
    await asyncio.gather(*(soak.client(n, seed, tokens, until) for n in range(CLIENTS)))
    took = time.monotonic() - started
    await sampler
    async with aiohttp.ClientSession() as session:
        metrics = await scrape(session, daemon.url)
    inbound, outbound, files_open = await after_clients_left(daemon)
    exit_code = await daemon.stop()
    requests = sum(soak.kinds.values())
    peak_mib = soak.peak_rss_kib / 1024
    figures.add("soak_requests", requests)
    figures.add("soak_errors", soak.error_count)
    figures.add("soak_bytes", soak.bytes)
    figures.add("leaks", (inbound > 0) + files_open)
    figures.peak(SOAK_RSS, peak_mib)
    fills = metrics.get("edgecache_fills_total{outcome=completed}", 0)
    figures.note(
        f"{CLIENTS} clients for {took:.0f}s: {requests} requests ({requests / took:.0f}/s), "
        f"{soak.bytes / MiB:.0f} MiB ({soak.bytes / MiB / took:.1f} MiB/s), {soak.error_count} "
        f"errors; mix {dict(soak.kinds)}; sources {dict(soak.sources)}; fills {fills:.0f}, "
        f"evictions {metrics.get('edgecache_evictions_total', 0):.0f}; peak RSS {peak_mib:.0f} "
        f"MiB ({soak.rss_samples} samples); peak upstream connections {soak.peak_upstream} "
        f"(waits for one: data {_pool(metrics, 'wait_seconds_count', 'data')}, metadata "
        f"{_pool(metrics, 'wait_seconds_count', 'metadata')}; refused "
        f"{metrics.get('edgecache_upstream_pool_refusals_total', 0):.0f}); "
        f"afterwards {inbound} client connections, "
        f"{files_open} blob/partial files open, {outbound} pooled upstream connections; "
        f"exit {exit_code}"
    )
    assert not soak.errors, f"{soak.error_count} errors, first: {soak.errors}"
    assert requests > CLIENTS
    assert peak_mib < RSS_LIMIT_MIB
    assert inbound == 0, "client connections were not closed"
    assert files_open == 0, "blob or partial files stayed open"
    assert exit_code == 0
    assert not partial_files(cache_dir)
    assert index_rows(cache_dir) == blob_files(cache_dir)
