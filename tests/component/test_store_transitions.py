"""The rule for changes of a stored copy (edgecache.store): a late step of an old change never
undoes a newer one. Each test is an interleaving that broke index and disk before the rule."""

from __future__ import annotations

import asyncio
import threading
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE
from edgecache.images import ImageRecord
from edgecache.store.cache import ImageCache
from edgecache.store.fill import Fill
from edgecache.store.index import BlobEntry
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance, FakeImage
from tests.storekit import blob_files, index_rows


async def fetch(client: TestClient, image: FakeImage, token: str) -> bytes:
    async with client.get(f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        return await resp.read()


async def second_fill(cache: ImageCache, image: FakeImage, token: str) -> Fill:
    """A fill of an image that is already stored: what a request starts when it missed, then
    waited for room while another fill committed the image."""
    fill = await cache.fill(ImageRecord.from_glance(image.record()), {"X-Auth-Token": token})
    assert fill is not None
    return fill


async def one_stored(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> tuple[TestClient, str, FakeImage]:
    """An edgecache holding one 1 MiB image."""
    edgecache = await make_edgecache()
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    assert await fetch(edgecache, image, token) == image.data
    return edgecache, token, image


async def two_stored_of_three(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> tuple[TestClient, str, tuple[FakeImage, FakeImage, FakeImage]]:
    """An edgecache with room for two 1 MiB images, holding x then y; z would need room."""
    edgecache = await make_edgecache(max_size=2 * MiB)
    token = glance.add_project("p1")
    x, y, z = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(3))
    for image in (x, y):
        assert await fetch(edgecache, image, token) == image.data
    return edgecache, token, (x, y, z)


async def test_an_eviction_finishing_late_leaves_a_newer_copy_alone(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """The soak's divergence: eviction dropped the row of x, a newer fill of x renamed its file
    in, then the eviction's unlink removed that file, and the fill added its row."""
    edgecache = await make_edgecache(max_size=2 * MiB)
    cache = edgecache.server.app[CACHE]
    token = glance.add_project("p1")
    x, other = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2))
    assert await fetch(edgecache, x, token) == x.data
    x.faults.hold_at = MiB - 1000
    fill = await second_fill(cache, x, token)
    await x.faults.reached_hold.wait()

    loop = asyncio.get_running_loop()
    unlinking, may_unlink = asyncio.Event(), threading.Event()
    renamed, commit_queued = asyncio.Event(), asyncio.Event()
    delete, move_into_place = cache.store.delete, cache.store.move_into_place
    hold = cache.transitions.locks.hold

    def slow_delete(image_id: str) -> None:  # an unlink queued behind busy worker threads
        loop.call_soon_threadsafe(unlinking.set)
        may_unlink.wait()
        delete(image_id)

    def noted_move(image_id: str) -> None:
        move_into_place(image_id)
        loop.call_soon_threadsafe(renamed.set)

    def noted_hold(image_id: str) -> AbstractAsyncContextManager[None]:
        if cache.transitions.locks.held(image_id):
            commit_queued.set()
        return hold(image_id)

    cache.store.delete = slow_delete  # type: ignore[method-assign]
    cache.store.move_into_place = noted_move  # type: ignore[method-assign]
    cache.transitions.locks.hold = noted_hold  # type: ignore[method-assign]
    other_fetch = asyncio.create_task(fetch(edgecache, other, token))
    await unlinking.wait()  # other's room: x's row is gone, its unlink is under way
    x.faults.release.set()
    # The newer fill of x finishes: either it waits for the eviction to end (the rule), or
    # it renames its file in before the unlink (the bug), and only then the unlink happens.
    waits = [asyncio.create_task(event.wait()) for event in (commit_queued, renamed)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    may_unlink.set()
    await fill.wait_verified()
    assert await other_fetch == other.data
    assert x.id in index_rows(cache_dir)
    assert index_rows(cache_dir) == blob_files(cache_dir)
    assert await fetch(edgecache, x, token) == x.data


async def test_a_failed_fill_never_deletes_the_stored_copy(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    edgecache, token, image = await one_stored(glance, make_edgecache)
    cache = edgecache.server.app[CACHE]
    image.faults.status = [403]  # not worth resuming: the second fill fails at once
    fill = await second_fill(cache, image, token)
    await asyncio.gather(fill.wait_verified(), return_exceptions=True)
    assert fill.error is not None
    assert index_rows(cache_dir) == blob_files(cache_dir) == {image.id: MiB}


async def test_quarantine_decided_about_an_older_copy_spares_the_newer_one(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    edgecache, token, image = await one_stored(glance, make_edgecache)
    cache = edgecache.server.app[CACHE]
    older = await cache.index.get(image.id)
    assert older is not None
    await (await second_fill(cache, image, token)).wait_verified()
    newer = await cache.index.get(image.id)
    assert newer is not None
    assert newer.generation > older.generation
    assert not await cache.transitions.quarantine(older)  # a reader found the old one corrupt
    assert not await cache.evictor.remove(image.id, generation=older.generation)
    assert index_rows(cache_dir) == blob_files(cache_dir) == {image.id: MiB}
    assert not list((cache_dir / "quarantine").iterdir())
    assert await cache.transitions.quarantine(newer)
    assert index_rows(cache_dir) == blob_files(cache_dir) == {}


async def test_a_commit_whose_caller_is_cancelled_still_completes(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """Shutdown cancels fills; one cancelled while committing must not leave half a commit."""
    edgecache = await make_edgecache()
    cache = edgecache.server.app[CACHE]
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    commit = cache.transitions.commit
    committing = asyncio.Event()

    async def noted_commit(entry: BlobEntry) -> BlobEntry:
        committing.set()
        return await commit(entry)

    cache.transitions.commit = noted_commit  # type: ignore[method-assign]
    await second_fill(cache, image, token)
    await committing.wait()
    await cache.fills.close()  # cancels the fill task in the middle of its commit
    await cache.evictor.settle()
    assert index_rows(cache_dir) == blob_files(cache_dir) == {image.id: MiB}


async def test_misses_of_an_image_waiting_for_room_share_one_fill(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    """Where the soak's fills of images already stored came from: the second request waited
    for room behind the first, which meanwhile filled and stored the image."""
    edgecache = await make_edgecache(max_size=2 * MiB)
    cache = edgecache.server.app[CACHE]
    token = glance.add_project("p1")
    stored = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2)]
    for image in stored:
        assert await fetch(edgecache, image, token) == image.data
    image = glance.add_image(random_bytes(MiB), owner="p1")
    record = ImageRecord.from_glance(image.record())
    delete, deletes = cache.store.delete, 0
    first_fill_done = threading.Event()

    def delete_after_the_first_fill(image_id: str) -> None:
        nonlocal deletes
        deletes += 1
        if deletes > 1:  # room for a second fill is made only after the first is stored
            first_fill_done.wait()
        delete(image_id)

    cache.store.delete = delete_after_the_first_fill  # type: ignore[method-assign]
    identity = {"X-Auth-Token": token}
    try:
        first, second = (asyncio.create_task(cache.fill(record, identity)) for _ in range(2))
        fill = await first
        assert fill is not None
        await fill.wait_verified()
    finally:
        first_fill_done.set()
    assert await second in (fill, None)
    await asyncio.gather(*cache.fills._tasks)
    assert glance.data_requests[image.id] == 1


async def test_a_reservation_does_not_wait_for_the_removals_it_starts(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    """Every miss takes the reservation lock: one that waited for its evictions' index writes
    and unlinks held it for seconds under load, and misses queued behind it until clients
    timed out. A fill whose room comes from an eviction streams while that unlink is stuck."""
    edgecache, token, (_x, y, z) = await two_stored_of_three(glance, make_edgecache)
    cache = edgecache.server.app[CACHE]
    loop = asyncio.get_running_loop()
    unlinking, may_unlink = asyncio.Event(), threading.Event()
    delete = cache.store.delete

    def stuck_delete(image_id: str) -> None:
        loop.call_soon_threadsafe(unlinking.set)
        may_unlink.wait()
        delete(image_id)

    cache.store.delete = stuck_delete  # type: ignore[method-assign]
    try:
        # A deadlock guard, not a speed target: the fill must not need the unlink to finish.
        assert await asyncio.wait_for(fetch(edgecache, z, token), timeout=30) == z.data
        assert unlinking.is_set()  # the eviction was started, and its unlink is still stuck
    finally:
        may_unlink.set()
    await cache.evictor.settle()
    assert index_rows(cache_dir) == blob_files(cache_dir)
    assert set(index_rows(cache_dir)) == {y.id, z.id}


async def test_an_eviction_refused_for_a_late_reader_evicts_another_copy_instead(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    """A reservation chooses its evictions in memory; a reader that comes before a removal
    runs makes it refuse. The store model test saw all four copies stay once quiet, above
    max_size: the room that reservation counted on was never freed."""
    edgecache, _token, (x, _y, z) = await two_stored_of_three(glance, make_edgecache)
    cache = edgecache.server.app[CACHE]
    assert await cache.evictor.reserve(z.id, MiB)  # chooses x, the least recently used
    with cache.store.reading(x.id):  # before x's removal has run
        await cache.evictor.settle()
    assert set(index_rows(cache.store.root)) == {x.id}
    assert await cache.index.total_size() + MiB <= cache.evictor.max_size


async def test_room_owed_while_every_copy_is_read_is_freed_when_a_reader_is_done(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    edgecache, _token, (x, y, z) = await two_stored_of_three(glance, make_edgecache)
    cache = edgecache.server.app[CACHE]
    assert await cache.evictor.reserve(z.id, MiB)
    with cache.store.reading(y.id):
        with cache.store.reading(x.id):
            await cache.evictor.settle()
            assert set(index_rows(cache.store.root)) == {x.id, y.id}  # nothing could go
        await cache.evictor.settle()  # x's reader is done: x can go now
    assert set(index_rows(cache.store.root)) == {y.id}
    assert await cache.index.total_size() + MiB <= cache.evictor.max_size
