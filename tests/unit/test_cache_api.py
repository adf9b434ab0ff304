"""Glance's cache management API, answered by edgecache for its own cache."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE, PREFETCHER
from tests.conftest import MiB, UpstreamServer, go_offline, random_bytes
from tests.fakeglance import ADMIN_TOKEN, FakeGlance

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}


async def cached_ids(client: TestClient) -> list[str]:
    async with client.get("/v2/cache", headers=ADMIN) as resp:
        assert resp.status == 200
        return [entry["image_id"] for entry in (await resp.json())["cached_images"]]


async def test_queue_list_delete_clear(glance: FakeGlance, edgecache: TestClient) -> None:
    images = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(3)]
    for image in images:
        async with edgecache.put(f"/v2/cache/{image.id}", headers=ADMIN) as resp:
            assert resp.status == 202
    await edgecache.server.app[PREFETCHER].join()
    assert sorted(await cached_ids(edgecache)) == sorted(image.id for image in images)
    assert all(glance.data_requests[image.id] == 1 for image in images)

    async with edgecache.get("/v2/cache", headers=ADMIN) as resp:
        listing = await resp.json()
    entry = next(e for e in listing["cached_images"] if e["image_id"] == images[0].id)
    assert entry["size"] == MiB
    assert entry["hits"] == 0
    assert entry["last_accessed"] == 0
    assert listing["queued_images"] == []

    async with edgecache.delete(f"/v2/cache/{images[0].id}", headers=ADMIN) as resp:
        assert resp.status == 204
    async with edgecache.delete(f"/v2/cache/{images[0].id}", headers=ADMIN) as resp:
        assert resp.status == 404
    async with edgecache.delete(
        "/v2/cache", headers={**ADMIN, "x-image-cache-clear-target": "cache"}
    ) as resp:
        assert resp.status == 204
    assert await cached_ids(edgecache) == []
    assert not list(edgecache.server.app[CACHE].store.blobs_dir.iterdir())


async def test_bad_clear_target_and_ids(glance: FakeGlance, edgecache: TestClient) -> None:
    async with edgecache.delete(
        "/v2/cache", headers={**ADMIN, "x-image-cache-clear-target": "everything"}
    ) as resp:
        assert resp.status == 400
    async with edgecache.put("/v2/cache/not-an-id", headers=ADMIN) as resp:
        assert resp.status == 404
    missing = "3f1c3b3e-0000-4000-8000-000000000000"
    async with edgecache.put(f"/v2/cache/{missing}", headers=ADMIN) as resp:
        assert resp.status == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v2/cache"),
        ("DELETE", "/v2/cache"),
        ("PUT", "/v2/cache/{id}"),
        ("DELETE", "/v2/cache/{id}"),
        ("POST", "/v2/cache/prune"),
    ],
)
async def test_only_admins_manage_the_cache(
    glance: FakeGlance, edgecache: TestClient, method: str, path: str
) -> None:
    member = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with edgecache.get(
        f"/v2/images/{image.id}/file", headers={"X-Auth-Token": member}
    ) as resp:
        assert await resp.read() == image.data  # the transfer ends once the copy is committed
    url = path.format(id=image.id)
    async with edgecache.request(method, url, headers={"X-Auth-Token": member}) as resp:
        assert resp.status == 403
    async with edgecache.request(method, url) as resp:
        assert resp.status == 401
    assert image.id in await cached_ids(edgecache)


async def test_admin_decision_is_remembered_offline(
    glance: FakeGlance, upstream_server: UpstreamServer, make_edgecache
) -> None:  # type: ignore[no-untyped-def]
    edgecache = await make_edgecache(failures_to_offline=1, probe_interval=0.05)
    member = glance.add_project("p1")
    assert await cached_ids(edgecache) == []
    async with edgecache.get("/v2/cache", headers={"X-Auth-Token": member}) as resp:
        assert resp.status == 403
    await go_offline(edgecache, upstream_server)
    assert await cached_ids(edgecache) == []
    async with edgecache.get("/v2/cache", headers={"X-Auth-Token": member}) as resp:
        assert resp.status == 403
