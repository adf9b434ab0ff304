"""Corrupt copies in quarantine/: counted toward max_size, removed first for room, after
`quarantine_keep` by the periodic pass, and on request (`glance cache-clean`)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage
from tests.storekit import cached_ids, fetch, flip_bit


async def quarantined(glance: FakeGlance, edgecache: TestClient, cache_dir: Path) -> FakeImage:
    """An image whose stored copy was found corrupt (and fetched again)."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await fetch(edgecache, image, token)
    flip_bit(cache_dir / "blobs" / image.id, 1000)
    assert await fetch(edgecache, image, token) == ("fill", image.data)
    assert len(list((cache_dir / "quarantine").iterdir())) == 1
    return image


async def metric(client: TestClient, sample: str) -> float:
    text = await (await client.get("/metrics")).text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in "#")
    assert sample in samples, f"no {sample} in /metrics"
    return float(samples[sample])


async def test_glance_cache_clean_empties_the_quarantine(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    glance.cache_enabled = True  # Glance's cache_delete lets the admin clean
    edgecache = await make_edgecache()
    image = await quarantined(glance, edgecache, cache_dir)
    assert await metric(edgecache, "edgecache_quarantine_files") == 1
    assert await metric(edgecache, "edgecache_quarantine_bytes") == MiB
    member = {"X-Auth-Token": glance.add_project("p2")}
    async with edgecache.post("/v2/cache/clean", headers=member) as resp:
        assert resp.status == 403
    assert len(list((cache_dir / "quarantine").iterdir())) == 1

    async with edgecache.post("/v2/cache/clean", headers={"X-Auth-Token": ADMIN_TOKEN}) as resp:
        assert resp.status == 200
    assert not list((cache_dir / "quarantine").iterdir())
    assert await cached_ids(edgecache) == {image.id}  # the good copy fetched again stays
    assert await metric(edgecache, "edgecache_quarantine_files") == 0
    assert await metric(edgecache, "edgecache_quarantine_bytes") == 0
    removed = 'edgecache_quarantine_removed_files_total{reason="clean"}'
    assert await metric(edgecache, removed) == 1


async def test_the_periodic_pass_removes_copies_older_than_quarantine_keep(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edgecache = await make_edgecache(quarantine_keep=3600.0)
    image = await quarantined(glance, edgecache, cache_dir)
    quarantine = edgecache.server.app[CACHE].quarantine
    await quarantine.remove_expired()
    (young,) = (cache_dir / "quarantine").iterdir()  # an hour has not passed
    # The name says when the copy was quarantined: make it two hours ago.
    old = young.with_name(f"{image.id}.{int(time.time()) - 7200}")
    young.rename(old)
    with caplog.at_level(logging.INFO, logger="edgecache.store.quarantine"):
        removed = await quarantine.remove_expired()
    assert (removed.files, removed.size) == (1, MiB)
    assert not list((cache_dir / "quarantine").iterdir())
    assert f"removed quarantined copy {old.name}" in caplog.text
    removed_by_age = 'edgecache_quarantine_removed_files_total{reason="age"}'
    assert await metric(edgecache, removed_by_age) == 1


async def test_quarantine_counts_toward_max_size_and_goes_first(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    edgecache = await make_edgecache(max_size=3 * MiB)
    token = glance.add_project("p1")
    a = await quarantined(glance, edgecache, cache_dir)  # a: 1 MiB stored, 1 MiB quarantined
    b, c = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2))
    await fetch(edgecache, b, token)  # 3 MiB with the quarantine: full
    await fetch(edgecache, c, token)  # needs room: the quarantined copy goes, not a copy
    assert not list((cache_dir / "quarantine").iterdir())
    assert await cached_ids(edgecache) == {a.id, b.id, c.id}
    removed_for_room = 'edgecache_quarantine_removed_files_total{reason="room"}'
    assert await metric(edgecache, removed_for_room) == 1


async def test_prune_removes_the_quarantine_first(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """A restarted daemon counts what the quarantine holds, and prunes it before copies."""
    glance.cache_enabled = True
    first = await make_edgecache(max_size=8 * MiB)
    token = glance.add_project("p1")
    a = await quarantined(glance, first, cache_dir)
    b = glance.add_image(random_bytes(MiB), owner="p1")
    await fetch(first, b, token)
    await first.close()
    edgecache = await make_edgecache(max_size=2 * MiB)  # over by the quarantined MiB
    assert await metric(edgecache, "edgecache_quarantine_bytes") == MiB
    async with edgecache.post("/v2/cache/prune", headers={"X-Auth-Token": ADMIN_TOKEN}) as resp:
        assert await resp.json() == {"total_files_pruned": 1, "total_bytes_pruned": MiB}
    assert not list((cache_dir / "quarantine").iterdir())
    assert await cached_ids(edgecache) == {a.id, b.id}
