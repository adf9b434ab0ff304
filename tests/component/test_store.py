"""The store: eviction, restart consistency, and bit flips in stored copies."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE
from edgecache.store import cache as cache_module
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance
from tests.storekit import cached_ids, fetch, flip_bit


async def test_lru_eviction_keeps_the_cache_under_max_size(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(max_size=3 * MiB)
    token = glance.add_project("p1")
    a, b, c, d = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(4))
    for image in (a, b, c):
        await fetch(edgecache, image, token)
    await fetch(edgecache, a, token)  # a is now the most recently used
    await fetch(edgecache, d, token)  # needs room: b, the least recently used, goes
    assert await cached_ids(edgecache) == {a.id, c.id, d.id}
    assert await edgecache.server.app[CACHE].index.total_size() <= 3 * MiB
    assert not edgecache.server.app[CACHE].store.blob_path(b.id).exists()


async def test_blob_being_read_is_never_evicted(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(max_size=2 * MiB)
    cache = edgecache.server.app[CACHE]
    token = glance.add_project("p1")
    a, b, c = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(3))
    await fetch(edgecache, a, token)
    await fetch(edgecache, b, token)
    with cache.store.reading(a.id):  # a is the LRU victim, but someone is reading it
        await fetch(edgecache, c, token)
    assert await cached_ids(edgecache) == {a.id, c.id}
    with cache.store.reading(a.id), cache.store.reading(c.id):
        # No unread blob can make room: the new image passes through uncached.
        d = glance.add_image(random_bytes(MiB), owner="p1")
        assert await fetch(edgecache, d, token) == ("upstream", d.data)
        assert d.id not in await cached_ids(edgecache)


async def test_restart_keeps_committed_copies_and_drops_debris(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    kept = glance.add_image(random_bytes(MiB), owner="p1")
    first = await make_edgecache()
    await fetch(first, kept, token)
    await first.close()
    # Debris a crash can leave: a partial fill, a renamed file never indexed.
    (cache_dir / "incoming" / "0b9a2f7e-aaaa-4000-8000-000000000000.part").write_bytes(b"half")
    orphan = cache_dir / "blobs" / "0b9a2f7e-bbbb-4000-8000-000000000000"
    orphan.write_bytes(b"never committed")
    second = await make_edgecache()
    assert await fetch(second, kept, token) == ("cache", kept.data)
    assert glance.data_requests[kept.id] == 1
    assert not list((cache_dir / "incoming").iterdir())
    assert not orphan.exists()


async def test_index_row_without_its_file_is_dropped_on_restart(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    first = await make_edgecache()
    await fetch(first, image, token)
    await first.close()
    (cache_dir / "blobs" / image.id).write_bytes(b"truncated")
    second = await make_edgecache()
    assert await cached_ids(second) == set()
    assert await fetch(second, image, token) == ("fill", image.data)


async def read_into(resp: aiohttp.ClientResponse, received: bytearray) -> None:
    async for piece in resp.content.iter_any():
        received += piece


async def test_bit_flip_in_first_chunk_is_refetched_transparently(
    glance: FakeGlance, edgecache: TestClient, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await fetch(edgecache, image, token)
    flip_bit(cache_dir / "blobs" / image.id, 1000)
    assert await fetch(edgecache, image, token) == ("fill", image.data)
    assert glance.data_requests[image.id] == 2
    assert len(list((cache_dir / "quarantine").iterdir())) == 1
    assert await fetch(edgecache, image, token) == ("cache", image.data)
    metrics = await (await edgecache.get("/metrics")).text()
    assert "edgecache_corrupt_blobs_total 1.0" in metrics


async def test_bit_flip_later_in_the_blob_aborts_the_transfer(
    glance: FakeGlance, edgecache: TestClient, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    size = 8 * MiB  # 32 chunks: the last is checked long after the first bytes went out
    image = glance.add_image(random_bytes(size), owner="p1")
    await fetch(edgecache, image, token)
    flip_bit(cache_dir / "blobs" / image.id, size - 5)
    async with edgecache.get(
        f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
    ) as resp:
        assert resp.headers["X-Edgecache-Source"] == "cache"
        received = bytearray()
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(resp, received)
        assert 0 < len(received) < size
        assert received == image.data[: len(received)]  # what was sent had been checked
    assert await fetch(edgecache, image, token) == ("fill", image.data)


async def test_without_read_verification_hits_are_sent_whole(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(verify_reads=False)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(3 * MiB), owner="p1")
    await fetch(edgecache, image, token)
    assert await fetch(edgecache, image, token) == ("cache", image.data)


@pytest.mark.parametrize(("reverify_after", "hashed_per_read"), [(60.0, (0, 0)), (0.0, (4, 4))])
async def test_a_copy_just_filled_or_checked_is_not_hashed_again_for_a_while(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    monkeypatch: pytest.MonkeyPatch,
    reverify_after: float,
    hashed_per_read: tuple[int, int],
) -> None:
    edgecache = await make_edgecache(reverify_after=reverify_after)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")  # 4 chunks of 256 KiB
    await fetch(edgecache, image, token)
    hashed: list[int] = []
    real = cache_module.verify_chunk

    def counting(fd: int, entry: object, chunk: int) -> None:
        hashed.append(chunk)
        real(fd, entry, chunk)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module, "verify_chunk", counting)
    counts = []
    for _ in range(2):
        assert await fetch(edgecache, image, token) == ("cache", image.data)
        counts.append(len(hashed))
        hashed.clear()
    assert tuple(counts) == hashed_per_read
