"""`kill -9` of a real edgecache process mid-fill: the restarted daemon serves no debris."""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Daemon, MiB, random_bytes
from tests.fakeglance import FakeGlance


async def test_kill_9_during_a_fill_leaves_no_corrupt_entry(
    glance: FakeGlance, start_daemon: Callable[[], Awaitable[Daemon]], cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    committed = glance.add_image(random_bytes(MiB), owner="p1")
    interrupted = glance.add_image(random_bytes(2 * MiB), owner="p1")
    interrupted.faults.hold_at = MiB
    headers = {"X-Auth-Token": token}
    process, url = await start_daemon()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v2/images/{committed.id}/file", headers=headers) as resp:
            assert await resp.read() == committed.data
        async with session.get(f"{url}/v2/images/{interrupted.id}/file", headers=headers) as resp:
            await resp.content.readexactly(1024)  # the fill is under way and streaming
            await interrupted.faults.reached_hold.wait()
            process.send_signal(signal.SIGKILL)
            await process.wait()
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert list((cache_dir / "incoming").iterdir())  # the kill left a partial file behind
    interrupted.faults.release.set()

    _, url = await start_daemon()
    assert not list((cache_dir / "incoming").iterdir())
    async with aiohttp.ClientSession() as session:
        for image, source in ((committed, "cache"), (interrupted, "fill"), (interrupted, "cache")):
            async with session.get(f"{url}/v2/images/{image.id}/file", headers=headers) as resp:
                assert resp.headers["X-Edgecache-Source"] == source
                assert await resp.read() == image.data
    assert glance.data_requests[committed.id] == 1
    assert glance.data_requests[interrupted.id] == 2
