"""The operator's commands against a real daemon process: warm, status, cache list/evict/verify."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.conftest import Daemon, MiB, SpawnEdgecache, edgecache_cli, random_bytes
from tests.fakeglance import FakeGlance
from tests.storekit import flip_bit

StartDaemon = Callable[[], Awaitable[Daemon]]


async def test_warm_status_list_pin_evict(
    glance: FakeGlance, start_daemon: StartDaemon, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    by_id = glance.add_image(random_bytes(2 * MiB), owner="p1", name="by-id")
    by_name = glance.add_image(random_bytes(MiB), owner="p1", name="ubuntu-24.04")
    tagged = glance.add_image(random_bytes(MiB), owner="p1", name="t", tags=["edge"])
    _, url = await start_daemon()
    socket = str(cache_dir / "admin.sock")
    warm = ("warm", "--endpoint", url, "--socket", socket, "--parallel", "2")
    code, output = await edgecache_cli(
        *warm, "--token", token, "--pin", "--tag", "edge", by_id.id, "ubuntu-24.04"
    )
    assert code == 0, output
    assert "3 images: 3 in the cache, 0 failed" in output
    assert all(glance.data_requests[i.id] == 1 for i in (by_id, by_name, tagged))

    code, output = await edgecache_cli(*warm, by_id.id, env={"OS_AUTH_TOKEN": token})
    assert code == 0, output
    assert "already cached" in output
    assert glance.data_requests[by_id.id] == 1

    code, output = await edgecache_cli("cache", "list", "--socket", socket)
    assert code == 0, output
    listed = {line.split()[0]: line for line in output.splitlines()[1:]}
    assert set(listed) == {by_id.id, by_name.id, tagged.id}
    assert "ubuntu-24.04" in listed[by_name.id]
    assert "yes" in listed[by_name.id]  # pinned

    code, output = await edgecache_cli("status", "--socket", socket)
    assert code == 0, output
    assert "up (since" in output
    assert "3 images" in output

    code, output = await edgecache_cli("cache", "evict", by_id.id, "--socket", socket)
    assert code == 0, output
    code, output = await edgecache_cli("cache", "list", "--socket", socket)
    assert by_id.id not in output


async def test_warm_selects_public_images_and_names_from_a_file(
    glance: FakeGlance, start_daemon: StartDaemon, tmp_path: Path
) -> None:
    token = glance.add_project("p1")
    public = [glance.add_image(random_bytes(MiB), owner="p9", visibility="public") for _ in "ab"]
    mine = glance.add_image(random_bytes(MiB), owner="p1", name="listed")
    private = glance.add_image(random_bytes(MiB), owner="p1", name="not-listed")
    listing = tmp_path / "images.txt"
    listing.write_text("# images for the maintenance window\nlisted   # by name\n")
    _, url = await start_daemon()
    code, output = await edgecache_cli(
        "warm", "--endpoint", url, "--token", token, "--all-public", "--from-file", str(listing)
    )
    assert code == 0, output
    assert "3 images: 3 in the cache, 0 failed" in output
    assert all(glance.data_requests[image.id] == 1 for image in [*public, mine])
    assert glance.data_requests[private.id] == 0


async def test_warm_reports_failures_and_exits_1(
    glance: FakeGlance, start_daemon: StartDaemon, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    good = glance.add_image(random_bytes(MiB), owner="p1", name="good")
    bad = glance.add_image(random_bytes(MiB), owner="p1", name="bad", hash_value="0" * 128)
    _, url = await start_daemon()
    code, output = await edgecache_cli("warm", "--endpoint", url, "--token", token, good.id, bad.id)
    assert code == 1, output
    assert "2 images: 1 in the cache, 1 failed" in output
    assert "failed" in next(line for line in output.splitlines() if line.startswith(bad.id))

    code, output = await edgecache_cli("warm", "--endpoint", url, "no-such-name", "--token", token)
    assert code == 1
    assert "no image named 'no-such-name'" in output

    code, output = await edgecache_cli("warm", "--endpoint", url, good.id)
    assert code == 1
    assert "no credentials" in output


async def test_cache_verify_finds_and_quarantines_a_flipped_bit(
    glance: FakeGlance, start_daemon: StartDaemon, cache_dir: Path
) -> None:
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2)]
    _, url = await start_daemon()
    code, output = await edgecache_cli(
        "warm", "--endpoint", url, "--token", token, *(i.id for i in images)
    )
    assert code == 0, output
    socket = str(cache_dir / "admin.sock")
    code, output = await edgecache_cli("cache", "verify", "--socket", socket)
    assert code == 0, output
    assert "2 verified, 0 corrupt" in output

    flip_bit(cache_dir / "blobs" / images[1].id, MiB // 2)
    code, output = await edgecache_cli("cache", "verify", "--socket", socket)
    assert code == 1, output
    assert "2 verified, 1 corrupt" in output
    assert len(list((cache_dir / "quarantine").iterdir())) == 1
    code, output = await edgecache_cli("cache", "list", "--socket", socket)
    assert images[1].id not in output

    code, output = await edgecache_cli("cache", "clean", "--socket", socket)
    assert code == 0, output
    assert "removed 1 quarantined copy (1.0 MiB)" in output
    assert not list((cache_dir / "quarantine").iterdir())


async def test_admin_paths_do_not_exist_over_tcp(start_daemon: StartDaemon) -> None:
    _, url = await start_daemon()
    async with aiohttp.ClientSession() as session:
        for method, path in (("GET", "status"), ("GET", "cache"), ("POST", "verify")):
            async with session.request(method, f"{url}/edgecache/admin/{path}") as resp:
                assert resp.status == 404


async def test_client_commands_say_when_the_daemon_is_not_there(tmp_path: Path) -> None:
    code, output = await edgecache_cli("status", "--socket", str(tmp_path / "none.sock"))
    assert code == 1
    assert "cannot reach the daemon's admin socket" in output


async def test_a_deep_cache_dir_still_gets_its_admin_socket(
    glance: FakeGlance, spawn_edgecache: SpawnEdgecache, glance_url: str, tmp_path: Path
) -> None:
    """sockaddr_un holds 108 bytes; a cache dir can be deeper than that."""
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    assert len(str(deep / "admin.sock")) > 108
    await spawn_edgecache(glance_url, deep)
    code, output = await edgecache_cli("status", "--socket", str(deep / "admin.sock"))
    assert code == 0, output
    assert "up (since" in output
