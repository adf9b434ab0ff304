"""Prefetch jobs with real daemon processes: a kill -9 loses none, `edgecache warm --queue`
returns at once, `edgecache status` and `GET /v2/cache` show the jobs, `--wait` follows them."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Daemon, MiB, SpawnEdgecache, edgecache_cli, random_bytes
from tests.fakeglance import SERVICE_USER, FakeGlance, FakeImage
from tests.zonekit import wait_for_metric

WITH_SERVICE_USER = """
[keystone]
auth_url = "{glance}/v3"
username = "{username}"
password = "{password}"
project_name = "service"

[cache]
prefetch_parallel = 1
"""


def member_who_may_queue(glance: FakeGlance) -> str:
    glance.cache_enabled = True
    glance.cache_policy = {"cache_image": {"p1"}, "cache_list": {"p1"}}
    return glance.add_project("p1")


async def cache_state(url: str, token: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v2/cache", headers={"X-Auth-Token": token}) as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


async def wait_until_cached(url: str, token: str, images: list[FakeImage]) -> None:
    wanted = sorted(image.id for image in images)
    for _ in range(600):
        state = await cache_state(url, token)
        if sorted(entry["image_id"] for entry in state["cached_images"]) == wanted:
            return
        await asyncio.sleep(0.05)  # polling another process's state
    raise AssertionError(f"never all cached: {state}")


async def test_jobs_survive_a_kill_9_and_complete(
    glance: FakeGlance,
    spawn_edgecache: SpawnEdgecache,
    glance_url: str,
    cache_dir: Path,
    tmp_path: Path,
) -> None:
    member = member_who_may_queue(glance)
    images = [glance.add_image(random_bytes(2 * MiB), owner="p1") for _ in range(3)]
    images[0].faults.hold_at = MiB
    config = tmp_path / "edgecache.toml"
    config.write_text(
        WITH_SERVICE_USER.format(
            glance=glance_url, username=SERVICE_USER[0], password=SERVICE_USER[1]
        )
    )
    process, url = await spawn_edgecache(glance_url, cache_dir, "--config", str(config))
    async with aiohttp.ClientSession() as session:
        for image in images:
            async with session.put(
                f"{url}/v2/cache/{image.id}", headers={"X-Auth-Token": member}
            ) as resp:
                assert resp.status == 202
    await images[0].faults.reached_hold.wait()
    process.send_signal(signal.SIGKILL)
    await process.wait()
    images[0].faults.hold_at = None
    images[0].faults.release.set()

    _, url = await spawn_edgecache(glance_url, cache_dir, "--config", str(config))
    await wait_until_cached(url, member, images)
    assert (await cache_state(url, member))["queued_images"] == []
    assert [glance.data_requests[image.id] for image in images] == [2, 1, 1]


async def test_warm_queue_returns_at_once_status_shows_progress_and_wait_follows(
    glance: FakeGlance, start_daemon: Callable[[], Awaitable[Daemon]], cache_dir: Path
) -> None:
    member = member_who_may_queue(glance)
    held = glance.add_image(random_bytes(2 * MiB), owner="p1", name="held")
    other = glance.add_image(random_bytes(MiB), owner="p1", name="other")
    held.faults.hold_at = MiB
    _, url = await start_daemon()
    socket = str(cache_dir / "admin.sock")
    warm = ("warm", "--endpoint", url, "--token", member, held.id, other.id)

    code, output = await edgecache_cli(*warm, "--queue")
    assert code == 0, output  # while `held` cannot be had past its first MiB
    assert "2 images: 2 queued, 0 refused" in output
    await held.faults.reached_hold.wait()
    for _ in range(600):
        code, output = await edgecache_cli("status", "--socket", socket)
        if "1.0 MiB / 2.0 MiB" in output:
            break
        await asyncio.sleep(0.05)  # polling another process's state
    assert code == 0, output
    jobs = output.split("\nJOB ", 1)[1].splitlines()[1:]  # the table after the JOB header
    assert [line.split() for line in jobs] == [
        [held.id, "running", "1.0", "MiB", "/", "2.0", "MiB"]
    ], output
    assert held.id in (await cache_state(url, member))["queued_images"]

    following = asyncio.create_task(edgecache_cli(*warm, "--wait"))
    await wait_for_metric([url], 'edgecache_transfers_in_progress{source="fill"}', 1)
    held.faults.release.set()
    code, output = await following
    assert code == 0, output
    assert "2 images: 2 in the cache, 0 failed" in output
    result = next(line for line in output.splitlines() if line.startswith(held.id))
    assert "  cached  " in result  # followed its fill to the end, not found stored
    assert glance.data_requests[held.id] == 1
    assert glance.data_requests[other.id] == 1
    assert (await cache_state(url, member))["queued_images"] == []


async def test_warm_queue_is_refused_where_glance_refuses_cache_image(
    glance: FakeGlance, start_daemon: Callable[[], Awaitable[Daemon]]
) -> None:
    member_who_may_queue(glance)
    outsider = glance.add_project("p2")
    image = glance.add_image(random_bytes(MiB), owner="p2")
    _, url = await start_daemon()
    code, output = await edgecache_cli(
        "warm", "--queue", "--endpoint", url, "--token", outsider, image.id
    )
    assert code == 1, output
    assert "1 images: 0 queued, 1 refused" in output
    assert "HTTP 403" in output
    code, output = await edgecache_cli(
        "warm", "--queue", "--pin", "--endpoint", url, "--token", outsider, image.id
    )
    assert code == 1
    assert "--pin needs the images cached first" in output
    assert glance.data_requests[image.id] == 0
