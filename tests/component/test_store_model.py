"""A model-based test of the store: random interleavings of fills (completing, failing,
resumed, started again for a copy already stored), hits, eviction under a small max_size,
removals, cache-clear, corrupt copies and restarts, run as concurrent tasks on one event loop.

After every step: no index row (in memory or in the database) names a missing or short file.
Whenever the operations in flight have ended: index and disk agree exactly, the cache is within
max_size, no partial file is left, and every copy stored at the previous such point is still
there unless a removal, eviction or quarantine took it. Every transfer that completed carried
exactly the image's bytes; one may be aborted only for an image whose fill was made to fail or
whose stored copy was corrupted.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edgecache.app import create_app
from edgecache.appkeys import CACHE
from edgecache.config import Settings
from edgecache.images import ImageRecord
from edgecache.store.cache import ImageCache
from edgecache.store.fill import FillFailed
from edgecache.store.index import BlobEntry
from tests.conftest import UpstreamServer
from tests.fakeglance import FakeGlance, FakeImage
from tests.storekit import blob_files, index_rows, partial_files

KiB = 1024
CHUNK = 64 * KiB
MAX_SIZE = 640 * KiB
SIZES = (70 * KiB, 200 * KiB, 256 * KiB, 300 * KiB)
IMAGES = st.integers(min_value=0, max_value=len(SIZES) - 1)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.workdir = tempfile.TemporaryDirectory(prefix="edgecache-model-")
        self.cache_dir = Path(self.workdir.name) / "cache"
        self.glance = FakeGlance()
        self.token = self.glance.add_project("p1")
        self.images = [
            self.glance.add_image(os.urandom(size), owner="p1", name=f"image-{n}")
            for n, size in enumerate(SIZES)
        ]
        self.upstream = UpstreamServer(self.glance)
        self.in_flight: set[asyncio.Task[None]] = set()
        self.troubled: set[str] = set()  # fills made to fail, copies corrupted
        self.broken: set[str] = set()  # upstream streams made to break
        self.dropped: set[str] = set()  # removed, evicted or quarantined since the last check
        self.stored: set[str] = set()  # the copies at the last quiet point
        self.problems: list[str] = []
        self.run(self.upstream.start())
        self.client = self.run(self._start_edgecache())

    # --- plumbing ------------------------------------------------------------------------
    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _start_edgecache(self) -> TestClient:
        app = create_app(
            Settings(
                upstream=self.upstream.url,
                cache_dir=self.cache_dir,
                chunk_size=CHUNK,
                max_size=MAX_SIZE,
                reverify_after=0.0,  # every read re-hashes: a corrupt copy is always noticed
                stall_timeout=5.0,
                read_timeout=5.0,
            )
        )
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        self._spy_on_removals(client.server.app[CACHE])
        return client

    def _spy_on_removals(self, cache: ImageCache) -> None:
        transitions = cache.transitions
        drop, quarantine = transitions.drop, transitions.quarantine

        async def noted_drop(
            image_id: str, *, generation: int | None = None, unless_read: bool = False
        ) -> BlobEntry | None:
            dropped = await drop(image_id, generation=generation, unless_read=unless_read)
            if dropped is not None:
                self.dropped.add(image_id)
            return dropped

        async def noted_quarantine(entry: BlobEntry) -> bool:
            moved = await quarantine(entry)
            if moved:
                self.dropped.add(entry.image_id)
            return moved

        transitions.drop = noted_drop  # type: ignore[method-assign]
        transitions.quarantine = noted_quarantine  # type: ignore[method-assign]

    @property
    def cache(self) -> ImageCache:
        return self.client.server.app[CACHE]

    def start(self, operation: Coroutine[Any, Any, None]) -> None:
        """Start an operation as a task and let it (and the others) run a little."""
        task = self.loop.create_task(operation)
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        self.run(_turns(3))

    def quiesce(self) -> None:
        """Let every operation in flight end, then the fills and store changes they began."""

        async def settle() -> None:
            while self.in_flight:
                await asyncio.gather(*self.in_flight)
            await asyncio.gather(*self.cache.fills._tasks, return_exceptions=True)
            await self.cache.evictor.settle()
            await self.cache.transitions.settle()

        self.run(settle())

    # --- operations ------------------------------------------------------------------------
    async def _read(self, image: FakeImage) -> None:
        troubled_before = image.id in self.troubled
        source = "none"
        try:
            async with self.client.get(
                f"/v2/images/{image.id}/file", headers={"X-Auth-Token": self.token}
            ) as resp:
                source = resp.headers.get("X-Edgecache-Source", "none")
                body = await resp.read()
                status = resp.status
        except aiohttp.ClientError as exc:
            # A relay (no room to keep the image) is not resumed: a broken stream aborts it.
            relay_broke = source == "upstream" and image.id in self.broken
            if not (troubled_before or image.id in self.troubled or relay_broke):
                self.problems.append(f"{source} read of {image.name} aborted: {exc!r}")
            return
        if status != 200 and not (troubled_before or image.id in self.troubled):
            self.problems.append(f"{source} read of {image.name}: status {status}")
        elif status == 200 and body != image.data:
            self.problems.append(f"{source} read of {image.name}: wrong bytes ({len(body)})")

    async def _refill(self, image: FakeImage) -> None:
        fill = await self.cache.fill(
            ImageRecord.from_glance(image.record()), {"X-Auth-Token": self.token}
        )
        if fill is not None:
            try:
                await fill.wait_verified()
            except FillFailed:
                if image.id not in self.troubled:
                    self.problems.append(f"fill of {image.name} failed untroubled")

    async def _remove(self, image: FakeImage) -> None:
        await self.cache.evictor.remove(image.id)

    async def _clear(self) -> None:
        for entry in await self.cache.index.all():
            await self.cache.evictor.remove(entry.image_id)

    # --- rules -----------------------------------------------------------------------------
    @rule(n=IMAGES)
    def read(self, n: int) -> None:
        self.start(self._read(self.images[n]))

    @rule(n=IMAGES)
    def fill_again(self, n: int) -> None:
        """A fill started whether or not the image is stored (a request that missed, then
        waited for room while another fill committed the image)."""
        self.start(self._refill(self.images[n]))

    @rule(n=IMAGES)
    def failing_fill(self, n: int) -> None:
        """A fill that Glance refuses half-way through its life (not worth resuming)."""
        image = self.images[n]
        image.faults.status = [403]
        self.troubled.add(image.id)
        self.start(self._refill(image))

    @rule(n=IMAGES, at=st.integers(min_value=1, max_value=60 * KiB))
    def read_through_a_broken_stream(self, n: int, at: int) -> None:
        """The upstream breaks; the fill resumes with Range and the read gets every byte."""
        self.images[n].faults.cut_at = [at]
        self.broken.add(self.images[n].id)
        self.start(self._read(self.images[n]))

    @rule(n=IMAGES)
    def remove(self, n: int) -> None:
        self.start(self._remove(self.images[n]))

    @rule()
    def clear(self) -> None:
        self.start(self._clear())

    @rule(n=IMAGES, offset=st.integers(min_value=0, max_value=2 * KiB))
    def corrupt_stored_copy(self, n: int, offset: int) -> None:
        image = self.images[n]
        path = self.cache_dir / "blobs" / image.id
        try:
            with path.open("r+b") as handle:
                handle.seek(offset)
                byte = handle.read(1)[0]
                handle.seek(offset)
                handle.write(bytes([byte ^ 0x40]))
        except FileNotFoundError:
            return
        self.troubled.add(image.id)

    @rule()
    def let_one_finish(self) -> None:
        if self.in_flight:
            self.run(asyncio.wait(set(self.in_flight), return_when=asyncio.FIRST_COMPLETED))

    @rule()
    def wait_for_quiet(self) -> None:
        self.quiesce()
        self.check_quiet_state()

    @precondition(lambda self: not self.problems)
    @rule()
    def restart(self) -> None:
        self.quiesce()
        self.check_quiet_state()
        self.run(self.client.close())
        self.client = self.run(self._start_edgecache())
        self.check_quiet_state()

    # --- checks ----------------------------------------------------------------------------
    @invariant()
    def rows_name_whole_files(self) -> None:
        files = blob_files(self.cache_dir)
        for image_id, size in index_rows(self.cache_dir).items():
            assert files.get(image_id) == size, f"index row {image_id} without its whole file"
        for image_id, entry in self.cache.index._entries.items():
            assert files.get(image_id) == entry.size, f"entry {image_id} without its whole file"

    @invariant()
    def every_byte_served_was_the_image(self) -> None:
        assert not self.problems, self.problems

    def check_quiet_state(self) -> None:
        rows, files = index_rows(self.cache_dir), blob_files(self.cache_dir)
        assert rows == files
        assert {e.image_id: e.size for e in self.cache.index._entries.values()} == rows
        assert sum(rows.values()) <= MAX_SIZE
        assert not partial_files(self.cache_dir)
        lost = self.stored - set(rows) - self.dropped
        assert not lost, f"copies lost without a removal: {lost}"
        self.stored, self.dropped = set(rows), set()
        for image in self.images:  # injected faults not consumed yet end here
            image.faults.status.clear()
            image.faults.cut_at.clear()
        self.troubled.clear()
        self.broken.clear()

    def teardown(self) -> None:
        try:
            self.quiesce()
            self.check_quiet_state()
        finally:
            self.run(self.client.close())
            self.run(self.upstream.stop())
            self.loop.close()
            self.workdir.cleanup()


async def _turns(count: int) -> None:
    """Give the other tasks `count` turns of the event loop (scheduling, not waiting)."""
    for _ in range(count):
        await asyncio.sleep(0)


TestStoreModel = StoreMachine.TestCase
TestStoreModel.settings = settings(
    max_examples=20,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
