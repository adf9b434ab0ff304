"""`python -m benchmarks rechecks`: what keeping cached images' records young costs Glance.

With `[keystone]` service credentials edgecache re-reads the record of every cached image in
the background so that none is older than `[offline] record_max_age` (issue 19). This runs the
real re-check code (edgecache.authorization.revalidate) over N cached images against a local
Glance stand-in that counts what it is asked, on a simulated clock (an hour of passes takes
seconds), and prints the requests Glance receives per minute in the steady state, and the
wall time of the largest pass against a Glance on loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import types
from collections import Counter
from pathlib import Path

from aiohttp import web

from edgecache.authorization import revalidate
from edgecache.authorization.decisions import SCHEMA as decision_tables
from edgecache.authorization.decisions import DecisionStore
from edgecache.authorization.keystone import service_keystone
from edgecache.authorization.revalidate import Revalidator
from edgecache.config import Settings
from edgecache.documents import SCHEMA as document_tables
from edgecache.documents import SHARED_SCOPE, Document, DocumentStore
from edgecache.metrics import Metrics
from edgecache.store.cache import ImageCache
from edgecache.store.index import BlobEntry
from edgecache.store.source import RegionSource
from edgecache.upstream.budget import UplinkBudget
from edgecache.upstream.client import Upstream

SERVICE_TOKEN = "service-token"
MINUTE = 60.0


class SimulatedClock:
    """Stands in for the `time` module inside the re-check code: wall time moves only when
    told to."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def glance_stand_in(asked: Counter[str]) -> web.Application:
    async def token(_: web.Request) -> web.Response:
        body = {
            "token": {
                "expires_at": "2999-01-01T00:00:00Z",
                "project": {"id": "service"},
                "user": {"id": "edgecache"},
                "roles": [{"name": "admin"}],
            }
        }
        return web.json_response(body, status=201, headers={"X-Subject-Token": SERVICE_TOKEN})

    async def record(request: web.Request) -> web.Response:
        asked["record"] += 1
        image_id = request.match_info["id"]
        body = {"id": image_id, "status": "active", "visibility": "public", "owner": "p1"}
        return web.Response(body=json.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/v3/auth/tokens", token)
    app.router.add_get("/v2/images/{id}", record)
    return app


async def measure(images: int, record_max_age: float, minutes: int) -> dict[str, float]:
    asked: Counter[str] = Counter()
    runner = web.AppRunner(glance_stand_in(asked))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    clock = SimulatedClock()
    real_time = revalidate.time
    revalidate.time = types.SimpleNamespace(time=clock.time)  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as cache_dir:
            settings = Settings(
                upstream=f"http://127.0.0.1:{port}",
                cache_dir=Path(cache_dir),
                keystone_url=f"http://127.0.0.1:{port}/v3",
                keystone_username="edgecache",
                keystone_password="secret",
                record_max_age=record_max_age,
            )
            return await _passes(settings, clock, asked, images, minutes)
    finally:
        revalidate.time = real_time
        await runner.cleanup()


async def _passes(
    settings: Settings, clock: SimulatedClock, asked: Counter[str], images: int, minutes: int
) -> dict[str, float]:
    metrics = Metrics()
    upstream = Upstream(settings, metrics)
    await upstream.start()
    cache = await ImageCache.open(
        settings,
        RegionSource(upstream),
        metrics,
        UplinkBudget(None, metrics),
        beside=(document_tables, decision_tables),
    )
    documents = DocumentStore(cache.index.database)
    assert settings.service_credentials is not None
    keystone, session = service_keystone(settings.service_credentials, settings, metrics)
    try:
        rng = random.Random(19)
        for n in range(images):
            image_id = f"00000000-0000-4000-8000-{n:012d}"
            await cache.index.add(
                BlobEntry(image_id, 1, None, None, None, 1, b"", clock.now, clock.now)
            )
            # The steady state: records of every age up to the bound.
            fetched = clock.now - rng.uniform(0, settings.record_max_age)
            body = json.dumps({"id": image_id, "status": "active"}).encode()
            document = Document(200, "application/json", body, fetched)
            await documents.put(SHARED_SCOPE, f"/v2/images/{image_id}", document)
        revalidator = Revalidator(
            upstream=upstream,
            keystone=keystone,
            documents=documents,
            decisions=DecisionStore(cache.index.database),
            cached=cache.index.image_ids,
            evict=cache.evictor.remove,
            metrics=metrics,
            forget_recent=lambda: None,
        )
        period = min(MINUTE, settings.record_max_age / 10)
        per_minute, slowest = [], 0.0
        oldest = 0.0
        for _ in range(int(minutes * MINUTE / period)):
            clock.now += period
            before, started = asked["record"], time.monotonic()
            await revalidator.refresh_cached(settings.record_max_age - 2 * period)
            slowest = max(slowest, time.monotonic() - started)
            per_minute.append((asked["record"] - before) * MINUTE / period)
            age = metrics.registry.get_sample_value(
                "edgecache_oldest_cached_image_record_age_seconds"
            )
            oldest = max(oldest, age or 0.0)
        return {
            "images": images,
            "record_max_age_s": settings.record_max_age,
            "simulated_minutes": minutes,
            "requests_per_minute_mean": sum(per_minute) / len(per_minute),
            "requests_per_minute_max": max(per_minute),
            "slowest_pass_s": slowest,
            "oldest_record_age_s_max": oldest,
        }
    finally:
        await session.close()
        await cache.close()
        await upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks rechecks")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--record-max-age", type=float, default=900.0)
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args(argv)
    figures = asyncio.run(measure(args.images, args.record_max_age, args.minutes))
    for name, value in figures.items():
        print(f"{name:28s} {value:10.1f}")
    return 0
