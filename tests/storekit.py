"""Helpers the store's tests share (in-process and real-process tiers alike): what a cache
holds on disk and in its index, a client's fetch, a bit flipped on disk, metrics scraped."""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from edgecache.appkeys import CACHE
from tests.fakeglance import FakeImage


async def scrape(session: aiohttp.ClientSession, base_url: str) -> dict[str, float]:
    """Prometheus samples by `name{label=value,...}` (labels sorted), plus totals by name."""
    async with session.get(f"{base_url}/metrics") as resp:
        assert resp.status == 200
        text = await resp.text()
    samples: defaultdict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] += sample.value
            samples[sample.name] += sample.value
    return dict(samples)


def index_rows(cache_dir: Path) -> dict[str, int]:
    """image id -> size, as the index's blobs table says (read-only; safe while it runs)."""
    uri = f"file:{cache_dir / 'index.sqlite'}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as db:
        return {str(r[0]): int(r[1]) for r in db.execute("SELECT image_id, size FROM blobs")}


def blob_files(cache_dir: Path) -> dict[str, int]:
    """image id -> size of the files in blobs/ (one removed while it is listed is left out)."""
    blobs = cache_dir / "blobs"
    sizes: dict[str, int] = {}
    for path in blobs.iterdir() if blobs.exists() else ():
        try:
            sizes[path.name] = path.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def partial_files(cache_dir: Path) -> list[str]:
    incoming = cache_dir / "incoming"
    return sorted(p.name for p in incoming.iterdir()) if incoming.exists() else []


async def fetch(client: TestClient, image: FakeImage, token: str) -> tuple[str, bytes]:
    async with client.get(f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        return resp.headers["X-Edgecache-Source"], await resp.read()


async def cached_ids(client: TestClient) -> set[str]:
    return {entry.image_id for entry in await client.server.app[CACHE].index.all()}


def flip_bit(path: Path, offset: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ 0x01]))
        handle.flush()
        os.fsync(handle.fileno())
