"""`kill -9` of a real edgecache process mid-fill: the restarted daemon serves no debris, and
resumes the partial fill the kill left instead of fetching the image again (issue 22)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Daemon, MiB, SpawnEdgecache, edgecache_cli, random_bytes
from tests.fakeglance import FakeGlance, FakeImage
from tests.storekit import scrape

IMAGE_SIZE = 8 * MiB
KILLED_AT = IMAGE_SIZE * 7 // 10  # the fill is killed at 70%


class Daemons:
    """`edgecache serve` processes on the test's cache dir, with `[cache] keep_partials`."""

    def __init__(
        self, spawn: SpawnEdgecache, glance_url: str, cache_dir: Path, keep_partials: int | None
    ) -> None:
        self._spawn = spawn
        self._glance_url = glance_url
        self.cache_dir = cache_dir
        self._config = cache_dir.parent / "edgecache.toml"
        kept = "" if keep_partials is None else f"keep_partials = {keep_partials}\n"
        self._config.write_text(f'[cache]\nchunk_size = "256KiB"\n{kept}')

    async def start(self) -> Daemon:
        return await self._spawn(self._glance_url, self.cache_dir, "--config", str(self._config))

    def incoming(self) -> dict[str, Path]:
        return {path.name: path for path in (self.cache_dir / "incoming").iterdir()}


@pytest.fixture
def daemons(spawn_edgecache: SpawnEdgecache, glance_url: str, cache_dir: Path) -> Daemons:
    return Daemons(spawn_edgecache, glance_url, cache_dir, keep_partials=None)


async def kill_during_fill(daemons: Daemons, image: FakeImage, token: str, at: int) -> None:
    """Start a daemon, have it fill `image` until its partial holds exactly `at` bytes (the
    fake Glance holds the stream there; a reader got them all), then kill -9 it."""
    image.faults.hold_at = at
    process, url = await daemons.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp,
    ):
        assert resp.headers["X-Edgecache-Source"] == "fill"
        assert await resp.content.readexactly(at) == image.data[:at]
        process.send_signal(signal.SIGKILL)
        await process.wait()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    image.faults.release.set()


async def get(url: str, image: FakeImage, token: str) -> tuple[str, bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp,
    ):
        assert resp.status == 200
        return resp.headers["X-Edgecache-Source"], await resp.read()


@pytest.mark.parametrize("keep_partials", [0, None], ids=["keep_partials=0", "default"])
async def test_kill_9_during_a_fill_leaves_no_corrupt_entry(
    glance: FakeGlance,
    spawn_edgecache: SpawnEdgecache,
    glance_url: str,
    cache_dir: Path,
    keep_partials: int | None,
) -> None:
    """Without keep_partials, start-up removes the partial file; with it, the partial is kept
    as exactly the beginning of the image, and never served as a copy: the next request is a
    fill (which resumes it), only the one after is a hit."""
    daemons = Daemons(spawn_edgecache, glance_url, cache_dir, keep_partials)
    token = glance.add_project("p1")
    committed = glance.add_image(random_bytes(MiB), owner="p1")
    interrupted = glance.add_image(random_bytes(2 * MiB), owner="p1")
    interrupted.faults.hold_at = MiB
    headers = {"X-Auth-Token": token}
    process, url = await daemons.start()
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

    _, url = await daemons.start()
    if keep_partials == 0:
        assert not list((cache_dir / "incoming").iterdir())
    else:
        incoming = daemons.incoming()
        assert set(incoming) == {f"{interrupted.id}.part", f"{interrupted.id}.json"}
        kept = incoming[f"{interrupted.id}.part"].read_bytes()
        assert kept
        assert interrupted.data.startswith(kept)
    async with aiohttp.ClientSession() as session:
        for image, source in ((committed, "cache"), (interrupted, "fill"), (interrupted, "cache")):
            async with session.get(f"{url}/v2/images/{image.id}/file", headers=headers) as resp:
                assert resp.headers["X-Edgecache-Source"] == source
                assert await resp.read() == image.data
    assert glance.data_requests[committed.id] == 1
    assert glance.data_requests[interrupted.id] == 2
    assert not list((cache_dir / "incoming").iterdir())


async def test_a_fill_killed_at_70_percent_resumes_after_the_restart(
    glance: FakeGlance, daemons: Daemons
) -> None:
    """The issue's measure: the region sends the image about once in all, not 1.7 times."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(IMAGE_SIZE), owner="p1")
    await kill_during_fill(daemons, image, token, KILLED_AT)
    assert daemons.incoming()[f"{image.id}.part"].stat().st_size == KILLED_AT

    _, url = await daemons.start()
    code, status = await edgecache_cli("status", "--socket", str(daemons.cache_dir / "admin.sock"))
    assert code == 0, status
    assert "kept partials  1 (5.6 MiB)" in status
    assert f"{image.id}  5.6 MiB / 8.0 MiB" in status
    assert await get(url, image, token) == ("fill", image.data)
    assert await get(url, image, token) == ("cache", image.data)
    assert glance.ranges_asked(image.id) == [None, f"bytes={KILLED_AT}-"]
    assert glance.bytes_sent[image.id] <= 1.25 * IMAGE_SIZE
    assert not daemons.incoming()
    async with aiohttp.ClientSession() as session:
        metrics = await scrape(session, url)
    assert metrics["edgecache_resumed_bytes_total"] == KILLED_AT
    assert metrics["edgecache_fetched_bytes_total"] == IMAGE_SIZE - KILLED_AT


async def test_a_partial_whose_image_changed_at_the_region_is_discarded(
    glance: FakeGlance, daemons: Daemons
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(IMAGE_SIZE), owner="p1")
    await kill_during_fill(daemons, image, token, KILLED_AT)
    image.change_data(random_bytes(IMAGE_SIZE))  # same id and size, other bytes

    _, url = await daemons.start()
    assert f"{image.id}.part" in daemons.incoming()
    assert await get(url, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, None]  # fetched again from byte 0
    assert not daemons.incoming()
    async with aiohttp.ClientSession() as session:
        metrics = await scrape(session, url)
    assert metrics["edgecache_kept_partials_discarded_total{reason=changed}"] == 1
    assert metrics.get("edgecache_resumed_bytes_total", 0) == 0


async def test_a_kept_partial_with_a_torn_tail_fails_verification_and_is_fetched_again(
    glance: FakeGlance, daemons: Daemons
) -> None:
    """What a power cut can leave when the record still says the whole file is trusted (a
    disk that lied about a flush): zeros where the last bytes were. The resumed fill sends
    every byte but the last, fails verification, and is discarded; the next fill is whole."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(IMAGE_SIZE), owner="p1")
    await kill_during_fill(daemons, image, token, KILLED_AT)
    partial = daemons.incoming()[f"{image.id}.part"]
    with partial.open("r+b") as handle:
        handle.seek(KILLED_AT - 64 * 1024)
        handle.write(bytes(64 * 1024))

    _, url = await daemons.start()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp,
    ):
        assert resp.headers["X-Edgecache-Source"] == "fill"
        received = await resp.content.readexactly(IMAGE_SIZE - 1)  # all but the last byte
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert received != image.data[:-1]
    assert not daemons.incoming()
    assert await get(url, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, f"bytes={KILLED_AT}-", None]
    async with aiohttp.ClientSession() as session:
        metrics = await scrape(session, url)
    assert metrics["edgecache_kept_partials_discarded_total{reason=verification}"] == 1


async def test_after_a_reboot_a_partial_resumes_from_its_last_checkpoint(
    glance: FakeGlance, daemons: Daemons
) -> None:
    """The record says another boot wrote the partial and flushed its first 4 MiB; what
    follows may be anything a power cut left (here: garbage), so only those 4 MiB are kept."""
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(IMAGE_SIZE), owner="p1")
    await kill_during_fill(daemons, image, token, KILLED_AT)
    incoming = daemons.incoming()
    flushed = 4 * MiB
    record = json.loads(incoming[f"{image.id}.json"].read_text())
    incoming[f"{image.id}.json"].write_text(
        json.dumps({**record, "boot": "an-earlier-boot", "durable": flushed})
    )
    with incoming[f"{image.id}.part"].open("r+b") as handle:
        handle.seek(flushed)
        handle.write(os.urandom(KILLED_AT - flushed))

    _, url = await daemons.start()
    assert daemons.incoming()[f"{image.id}.part"].stat().st_size == flushed
    assert await get(url, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, f"bytes={flushed}-"]


async def test_a_partial_older_than_keep_partials_is_discarded_at_start_up(
    glance: FakeGlance, daemons: Daemons
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(IMAGE_SIZE), owner="p1")
    await kill_during_fill(daemons, image, token, KILLED_AT)
    partial = daemons.incoming()[f"{image.id}.part"]
    two_days_ago = partial.stat().st_mtime - 2 * 86400
    os.utime(partial, (two_days_ago, two_days_ago))

    _, url = await daemons.start()
    assert not daemons.incoming()
    assert await get(url, image, token) == ("fill", image.data)
    assert glance.ranges_asked(image.id) == [None, None]
