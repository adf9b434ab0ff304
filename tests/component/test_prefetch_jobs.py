"""Prefetch jobs that last: kept in the index database across restarts, fetched with whose
credentials (edgecache.prefetch.credentials), started only inside [prefetch] window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edgecache.app import create_app
from edgecache.appkeys import PREFETCHER
from edgecache.config import ConfigError, Settings, load_settings
from edgecache.prefetch.queue import (
    NEEDS_CREDENTIALS,
    QUEUED,
    RETRY_AFTER,
    RUNNING,
    WAITING,
    JobProgress,
)
from edgecache.prefetch.window import Clock, Window
from tests.conftest import MiB, UpstreamServer, go_offline, go_online, random_bytes
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage, service_credentials

NIGHT = (22 * 60, 6 * 60)  # [prefetch] window = "22:00-06:00"
EVENING = datetime(2027, 3, 1, 21, 30)


class FakeClock(Clock):
    """Local time that moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self._now = now
        self._moved = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    async def sleep(self, seconds: float) -> None:
        until = self._now + timedelta(seconds=seconds)
        while self._now < until:
            moved = self._moved
            await moved.wait()

    def set(self, now: datetime) -> None:
        self._now = now
        self._moved.set()
        self._moved = asyncio.Event()


StartEdgecache = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def start_edgecache(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[StartEdgecache]:
    """make_edgecache with a clock of the test's own (same cache dir each time)."""
    clients: list[TestClient] = []

    async def start(clock: Clock | None = None, **overrides: Any) -> TestClient:
        app = create_app(make_settings(**overrides), clock)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
def keystone(glance_url: str) -> dict[str, str]:
    return service_credentials(glance_url)


@pytest.fixture
def member(glance: FakeGlance) -> str:
    """A member of p1 whom Glance's policy lets queue images and list the cache."""
    glance.cache_enabled = True
    glance.cache_policy = {"cache_image": {"p1"}, "cache_list": {"p1"}}
    return glance.add_project("p1")


async def queue(client: TestClient, image: FakeImage, token: str) -> None:
    async with client.put(f"/v2/cache/{image.id}", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 202, await resp.text()


async def cache_state(client: TestClient, token: str) -> dict[str, Any]:
    async with client.get("/v2/cache", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


def progress(client: TestClient) -> dict[str, JobProgress]:
    return {job.image_id: job for job in client.server.app[PREFETCHER].progress()}


def data_tokens(glance: FakeGlance, image: FakeImage) -> list[str]:
    """The token of each request for the image's bytes (not the one-byte download checks)."""
    return [
        headers.get("X-Auth-Token", "")
        for method, path, headers in glance.requests
        if (method, path) == ("GET", f"/v2/images/{image.id}/file")
        and headers.get("Range") != "bytes=0-0"
    ]


def index_database(cache_dir: Path) -> bytes:
    """The index database's bytes as they are on disk (with its write-ahead log)."""
    return b"".join(path.read_bytes() for path in sorted(cache_dir.glob("index.sqlite*")))


async def test_jobs_survive_a_restart_and_resume_as_the_service_user(
    glance: FakeGlance,
    start_edgecache: StartEdgecache,
    keystone: dict[str, Any],
    member: str,
    cache_dir: Path,
) -> None:
    images = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(3)]
    images[0].faults.hold_at = MiB // 2
    edgecache = await start_edgecache(prefetch_parallel=1, **keystone)
    for image in images:
        await queue(edgecache, image, member)
    await images[0].faults.reached_hold.wait()
    jobs = progress(edgecache)
    assert [jobs[image.id].state for image in images] == [RUNNING, QUEUED, QUEUED]
    assert jobs[images[0].id].size == MiB
    assert sorted((await cache_state(edgecache, member))["queued_images"]) == sorted(
        image.id for image in images
    )
    assert member.encode() not in index_database(cache_dir)  # a job holds no token

    await edgecache.close()  # a restart: the fill under way is abandoned
    images[0].faults.hold_at = None
    images[0].faults.release.set()
    edgecache = await start_edgecache(prefetch_parallel=1, **keystone)
    await edgecache.server.app[PREFETCHER].join()

    state = await cache_state(edgecache, member)
    assert sorted(entry["image_id"] for entry in state["cached_images"]) == sorted(
        image.id for image in images
    )
    assert state["queued_images"] == []
    assert data_tokens(glance, images[0]) == [member, ADMIN_TOKEN]  # ADMIN_TOKEN: the service
    assert data_tokens(glance, images[1]) == [ADMIN_TOKEN]
    assert data_tokens(glance, images[2]) == [ADMIN_TOKEN]


async def test_without_service_credentials_a_job_from_before_a_restart_waits_for_a_caller(
    glance: FakeGlance, start_edgecache: StartEdgecache, member: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(clock, prefetch_window=NIGHT)
    await queue(edgecache, image, member)
    assert progress(edgecache)[image.id].why == "for the window 22:00-06:00"

    await edgecache.close()
    edgecache = await start_edgecache(clock, prefetch_window=NIGHT)
    clock.set(EVENING.replace(hour=23))
    await edgecache.server.app[PREFETCHER].join()
    job = progress(edgecache)[image.id]
    assert job.state == NEEDS_CREDENTIALS
    assert job.why is not None
    assert "queued before the daemon restarted" in job.why
    assert glance.data_requests[image.id] == 0
    assert (await cache_state(edgecache, member))["queued_images"] == [image.id]

    await queue(edgecache, image, member)  # the caller queues it again
    await edgecache.server.app[PREFETCHER].join()
    assert [e["image_id"] for e in (await cache_state(edgecache, member))["cached_images"]] == [
        image.id
    ]
    assert data_tokens(glance, image) == [member]


@pytest.mark.parametrize("with_keystone", [True, False])
async def test_a_token_that_expired_while_its_job_waited_for_the_window(
    glance: FakeGlance,
    start_edgecache: StartEdgecache,
    keystone: dict[str, Any],
    member: str,
    with_keystone: bool,
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(
        clock, prefetch_window=NIGHT, **(keystone if with_keystone else {})
    )
    await queue(edgecache, image, member)
    del glance.tokens[member]  # Keystone no longer knows it by the time the window opens
    clock.set(EVENING.replace(hour=22, minute=0))
    await edgecache.server.app[PREFETCHER].join()

    if with_keystone:
        assert progress(edgecache) == {}
        assert data_tokens(glance, image) == [ADMIN_TOKEN]
    else:
        job = progress(edgecache)[image.id]
        assert job.state == NEEDS_CREDENTIALS
        assert job.why == "the region answered HTTP 401 to the caller who queued it; queue it again"
        assert glance.data_requests[image.id] == 0


async def test_the_window_holds_jobs_back_but_never_a_boot(
    glance: FakeGlance, start_edgecache: StartEdgecache, member: str
) -> None:
    queued, booted = (glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2))
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(clock, prefetch_window=NIGHT)
    for image in (queued, booted):
        await queue(edgecache, image, member)
    await edgecache.server.app[PREFETCHER].join()
    assert {job.state for job in progress(edgecache).values()} == {WAITING}
    assert glance.data_requests[queued.id] == 0

    # A boot of a queued image, outside the window: served at once.
    async with edgecache.get(
        f"/v2/images/{booted.id}/file", headers={"X-Auth-Token": member}
    ) as resp:
        assert await resp.read() == booted.data
    clock.set(EVENING.replace(hour=21, minute=59))
    await edgecache.server.app[PREFETCHER].join()
    assert glance.data_requests[queued.id] == 0

    clock.set(EVENING.replace(hour=22, minute=0))
    await edgecache.server.app[PREFETCHER].join()
    assert progress(edgecache) == {}
    assert glance.data_requests[queued.id] == 1
    assert glance.data_requests[booted.id] == 1  # its job found it stored

    clock.set(EVENING.replace(day=2))
    await queue(edgecache, booted, member)
    assert progress(edgecache) == {}  # stored: no job waits for the window for it


async def test_a_job_for_an_image_gone_from_the_region_is_dropped(
    glance: FakeGlance, start_edgecache: StartEdgecache, member: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(clock, prefetch_window=NIGHT)
    await queue(edgecache, image, member)
    del glance.images[image.id]
    clock.set(EVENING.replace(hour=23))
    await edgecache.server.app[PREFETCHER].join()
    assert progress(edgecache) == {}
    assert (await cache_state(edgecache, member))["queued_images"] == []


async def test_a_job_the_region_cannot_answer_for_is_tried_again(
    glance: FakeGlance, start_edgecache: StartEdgecache, member: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(clock, prefetch_window=NIGHT)
    await queue(edgecache, image, member)
    glance.record_overrides[image.id] = b"<html>a proxy's error page</html>"
    night = EVENING.replace(hour=22, minute=0)
    clock.set(night)
    await edgecache.server.app[PREFETCHER].join()
    job = progress(edgecache)[image.id]
    assert (job.state, job.why) == (
        WAITING,
        "to be tried again: the region's answer for its record was not one",
    )

    del glance.record_overrides[image.id]
    clock.set(night + timedelta(seconds=RETRY_AFTER - 1))
    await edgecache.server.app[PREFETCHER].join()
    assert glance.data_requests[image.id] == 0
    clock.set(night + timedelta(seconds=RETRY_AFTER))
    await edgecache.server.app[PREFETCHER].join()
    assert progress(edgecache) == {}
    assert glance.data_requests[image.id] == 1


async def test_jobs_wait_for_the_uplink_and_start_when_it_is_back(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    start_edgecache: StartEdgecache,
    member: str,
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    clock = FakeClock(EVENING)
    edgecache = await start_edgecache(
        clock, prefetch_window=NIGHT, failures_to_offline=1, probe_interval=0.05
    )
    await queue(edgecache, image, member)
    await go_offline(edgecache, upstream_server)
    clock.set(EVENING.replace(hour=23))
    await edgecache.server.app[PREFETCHER].join()
    job = progress(edgecache)[image.id]
    assert (job.state, job.why) == (WAITING, "for the uplink to the region")

    await go_online(edgecache, upstream_server)
    await edgecache.server.app[PREFETCHER].join()
    assert progress(edgecache) == {}
    assert glance.data_requests[image.id] == 1


def test_the_window_across_midnight() -> None:
    window = Window(*NIGHT)
    day = datetime(2027, 3, 1)
    assert str(window) == "22:00-06:00"
    assert not window.allows(day.replace(hour=21, minute=59))
    assert window.allows(day.replace(hour=22))
    assert window.allows(day.replace(hour=3))
    assert not window.allows(day.replace(hour=6))
    assert window.opens_in(day.replace(hour=21, minute=30)) == 30 * 60
    assert window.opens_in(day.replace(hour=6)) == 16 * 3600
    assert window.opens_in(day.replace(hour=23)) == 0
    daytime = Window(9 * 60, 17 * 60)
    assert daytime.allows(day.replace(hour=9))
    assert not daytime.allows(day.replace(hour=17))
    assert daytime.opens_in(day.replace(hour=18)) == 15 * 3600


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("22:00-06:00", (22 * 60, 6 * 60)),
        (" 9:30 - 17:00 ", (9 * 60 + 30, 17 * 60)),
        ("20:00-24:00", (20 * 60, 24 * 60)),
        ("", None),
    ],
)
def test_window_setting(tmp_path: Path, text: str, expected: tuple[int, int] | None) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(f'[prefetch]\nwindow = "{text}"\n')
    assert load_settings(config, {}, require_upstream=False).prefetch_window == expected


@pytest.mark.parametrize("text", ["22-06", "25:00-06:00", "22:00-06:60", "08:00-08:00", "1"])
def test_window_setting_refused(tmp_path: Path, text: str) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text(f'[prefetch]\nwindow = "{text}"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(config, {}, require_upstream=False)
    assert refused.value.key == "prefetch.window"
