"""Partial fills kept to be resumed (issue 22), in-process: kept when the daemon stops, resumed
with Range by the next run, counted toward max_size and removed before any stored copy, and
by age. (kill -9 and torn tails: test_crash.py; records and checkpoints: tests/unit.)"""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE, METRICS
from edgecache.images import ImageRecord
from edgecache.store import sidecar
from edgecache.store.sidecar import PartialRecord
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance, FakeImage
from tests.storekit import cached_ids, fetch

STOPPED_AT = 700 * 1024  # of a 1 MiB image


async def stop_during_fill(
    edgecache: TestClient, image: FakeImage, token: str, at: int = STOPPED_AT
) -> None:
    """Shut edgecache down while it fills `image`, its partial holding exactly `at` bytes."""
    image.faults.hold_at = at
    async with edgecache.get(
        f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
    ) as resp:
        assert await resp.content.readexactly(at) == image.data[:at]
        await edgecache.close()
    image.faults.release.set()


def discarded(edgecache: TestClient, reason: str) -> float:
    metric = edgecache.server.app[METRICS].kept_partials_discarded.labels(reason)
    return float(metric._value.get())


async def test_a_fill_stopped_by_shutdown_is_kept_and_resumed_by_the_next_run(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await stop_during_fill(await make_edgecache(), image, token)
    record = sidecar.read(cache_dir / "incoming" / f"{image.id}.json")
    assert record is not None
    assert record.durable == STOPPED_AT  # flushed as the daemon stopped
    assert record.describes(ImageRecord.from_glance(image.record()))

    edgecache = await make_edgecache()
    assert [p.length for p in edgecache.server.app[CACHE].kept_partials()] == [STOPPED_AT]
    assert await fetch(edgecache, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, f"bytes={STOPPED_AT}-"]
    assert not list((cache_dir / "incoming").iterdir())
    assert await fetch(edgecache, image, token) == ("cache", image.data)


async def test_a_kept_partial_of_the_whole_image_needs_no_byte_from_the_region(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """A run stopped after the last byte was written, before the commit: the next fill reads
    it all back, verifies it and commits it without a data request."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    (cache_dir / "incoming").mkdir(parents=True)
    (cache_dir / "incoming" / f"{image.id}.part").write_bytes(image.data)
    record = PartialRecord.of(ImageRecord.from_glance(image.record()))
    sidecar.write(cache_dir / "incoming" / f"{image.id}.json", record)
    edgecache = await make_edgecache()
    assert await fetch(edgecache, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == []
    assert await fetch(edgecache, image, token) == ("cache", image.data)


async def test_with_keep_partials_0_nothing_is_kept(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await stop_during_fill(await make_edgecache(keep_partials=0.0), image, token)
    assert not list((cache_dir / "incoming").iterdir())
    edgecache = await make_edgecache(keep_partials=0.0)
    assert await fetch(edgecache, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, None]


async def test_kept_partials_count_toward_max_size_and_go_before_stored_copies(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """With two 1 MiB copies and 0.7 MiB kept in a cache of 3 MiB, a third copy needs the
    partial's room: the partial goes, both copies stay."""
    token = glance.add_project("p1")
    a, b, partial, d = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(4))
    first = await make_edgecache(max_size=3 * MiB)
    for image in (a, b):
        await fetch(first, image, token)
    await stop_during_fill(first, partial, token)

    edgecache = await make_edgecache(max_size=3 * MiB)
    assert await fetch(edgecache, d, token) == ("fill", d.data)
    assert await cached_ids(edgecache) == {a.id, b.id, d.id}
    assert not edgecache.server.app[CACHE].kept_partials()
    assert not list((cache_dir / "incoming").iterdir())
    assert discarded(edgecache, "room") == 1


async def test_a_resumed_partial_is_not_counted_twice(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    """A fill that resumes a kept partial reserves its whole image, and the partial's bytes
    are part of that: in a cache of 2 MiB, the stored 1 MiB copy stays."""
    token = glance.add_project("p1")
    stored, partial = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2))
    first = await make_edgecache(max_size=2 * MiB)
    await fetch(first, stored, token)
    await stop_during_fill(first, partial, token)

    edgecache = await make_edgecache(max_size=2 * MiB)
    assert await fetch(edgecache, partial, token) == ("fill", partial.data)
    assert glance.ranges_asked(partial.id) == [None, f"bytes={STOPPED_AT}-"]
    assert await cached_ids(edgecache) == {stored.id, partial.id}


async def test_a_partial_that_cannot_get_room_stays_kept(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """A fill that cannot reserve room (every copy being read) passes the image through and
    gives the partial back, to be resumed when there is room."""
    token = glance.add_project("p1")
    stored, partial = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2))
    first = await make_edgecache(max_size=2 * MiB)
    await fetch(first, stored, token)
    await stop_during_fill(first, partial, token)

    edgecache = await make_edgecache(max_size=MiB + STOPPED_AT)
    cache = edgecache.server.app[CACHE]
    with cache.store.reading(stored.id):
        assert await fetch(edgecache, partial, token) == ("upstream", partial.data)
    assert [p.image_id for p in cache.kept_partials()] == [partial.id]
    assert (cache_dir / "incoming" / f"{partial.id}.part").stat().st_size == STOPPED_AT


async def test_the_periodic_pass_removes_partials_kept_longer_than_keep_partials(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await stop_during_fill(await make_edgecache(), image, token)
    edgecache = await make_edgecache()
    partials = edgecache.server.app[CACHE].partials
    await partials.remove_expired()
    assert [p.image_id for p in partials.listing()] == [image.id]  # kept for a day
    partials.keep_for = 0.0  # as if that day had passed
    await partials.remove_expired()
    assert not partials.listing()
    assert not list((cache_dir / "incoming").iterdir())
    assert discarded(edgecache, "age") == 1
