"""Glance's cache management API, answered by edgecache for its own cache."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE, PREFETCHER
from tests.conftest import EdgecacheFactory, MiB, UpstreamServer, go_offline, random_bytes
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage, service_credentials

ADMIN = {"X-Auth-Token": ADMIN_TOKEN}
# Every action of the API, and the Glance policy edgecache asks for it.
ACTIONS = [
    ("GET", "/v2/cache", "cache_list"),
    ("PUT", "/v2/cache/{id}", "cache_image"),
    ("DELETE", "/v2/cache/{id}", "cache_delete"),
    ("DELETE", "/v2/cache", "cache_delete"),
    ("POST", "/v2/cache/prune", "cache_delete"),
    ("POST", "/v2/cache/clean", "cache_delete"),
]
ALLOWED = {"GET": 200, "PUT": 202, "DELETE": 204, "POST": 200}
CLEAR = "x-image-cache-clear-target"


@pytest.fixture
def keystone(glance_url: str) -> dict[str, str]:
    """`[keystone]` settings: the fake Glance's Keystone says which roles a token carries."""
    return service_credentials(glance_url)


@pytest.fixture
async def edgecache(make_edgecache: EdgecacheFactory, keystone: dict[str, Any]) -> TestClient:
    """With `[keystone]`: in front of the fake Glance (no cache API of its own), admins manage
    the cache."""
    return await make_edgecache(**keystone)


async def cached_ids(client: TestClient) -> list[str]:
    async with client.get("/v2/cache", headers=ADMIN) as resp:
        assert resp.status == 200
        return [entry["image_id"] for entry in (await resp.json())["cached_images"]]


async def cached_image(glance: FakeGlance, client: TestClient, token: str) -> FakeImage:
    """An image of p1 that `token` downloaded through `client` (so it is cached)."""
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with client.get(f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}) as resp:
        assert await resp.read() == image.data  # the transfer ends once the copy is committed
    return image


async def statuses(client: TestClient, token: str, image: FakeImage) -> dict[str, int]:
    """'METHOD path' of every action -> the status edgecache answered `token`."""
    answers = {}
    for method, path, _policy in ACTIONS:
        url = path.format(id=image.id)
        async with client.request(method, url, headers={"X-Auth-Token": token}) as resp:
            answers[f"{method} {path}"] = resp.status
    return answers


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


@pytest.mark.parametrize("granted", ["cache_list", "cache_image", "cache_delete"])
async def test_each_action_is_decided_by_its_own_glance_policy(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, granted: str
) -> None:
    """A Glance with its cache on whose policy lets project members do one thing only."""
    glance.cache_enabled = True
    glance.cache_policy = {granted: {"p1"}}
    edgecache = await make_edgecache()
    member = glance.add_project("p1")
    image = await cached_image(glance, edgecache, member)
    answers = await statuses(edgecache, member, image)
    expected = {
        f"{method} {path}": ALLOWED[method] if policy == granted else 403
        for method, path, policy in ACTIONS
    }
    assert answers == expected


async def test_the_delete_question_deletes_nothing_at_glance(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    """cache_delete is asked with a clear target Glance refuses after its policy check, even
    when the caller sent a target of its own."""
    glance.cache_enabled = True
    edgecache = await make_edgecache()
    image = await cached_image(glance, edgecache, glance.add_project("p1"))
    glance.own_cache.add(image.id)
    clear_cache = {**ADMIN, "X-Image-Cache-Clear-Target": "cache"}
    for method, url, headers in (
        ("DELETE", f"/v2/cache/{image.id}", clear_cache),
        ("DELETE", "/v2/cache", clear_cache),
        ("POST", "/v2/cache/prune", ADMIN),
        ("POST", "/v2/cache/clean", ADMIN),
    ):
        async with edgecache.request(method, url, headers=headers) as resp:
            assert resp.status in (200, 204), (method, url)
    asked = [headers for method, path, headers in glance.requests if path == "/v2/cache"]
    targets = [
        value for headers in asked for name, value in headers.items() if name.lower() == CLEAR
    ]
    assert len(targets) == 4
    assert all(value not in ("", "cache", "queue") for value in targets), targets
    assert glance.own_cache == {image.id}
    assert await cached_ids(edgecache) == []


async def test_queueing_asks_glance_about_the_image_itself(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    glance.cache_enabled = True
    edgecache = await make_edgecache()
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with edgecache.put(f"/v2/cache/{image.id}", headers=ADMIN) as resp:
        assert resp.status == 202
    await edgecache.server.app[PREFETCHER].join()
    assert ("PUT", f"/v2/cache/{image.id}") in [(m, p) for m, p, _ in glance.requests]
    assert glance.own_cache == {image.id}  # a Glance with its own cache queues it too
    assert await cached_ids(edgecache) == [image.id]


@pytest.mark.parametrize("with_keystone", [False, True])
async def test_without_glances_cache_api_only_admins_known_to_keystone(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    keystone: dict[str, Any],
    with_keystone: bool,
) -> None:
    """Glance without its cache API answers 404 once its policy passed: it cannot say."""
    glance.cache_policy = {"cache_list": {"p1"}, "cache_image": {"p1"}, "cache_delete": {"p1"}}
    edgecache = await make_edgecache(**(keystone if with_keystone else {}))
    member = glance.add_project("p1")
    image = await cached_image(glance, edgecache, member)
    admin = await statuses(edgecache, ADMIN_TOKEN, image)
    if with_keystone:
        assert admin == {f"{m} {p}": ALLOWED[m] for m, p, _ in ACTIONS}
    else:
        assert admin == {f"{m} {p}": 403 for m, p, _ in ACTIONS}
        async with edgecache.get(
            "/v2/cache", headers={**ADMIN, "Accept": "application/json"}
        ) as resp:
            assert "admin role" in (await resp.json())["message"]
    assert await statuses(edgecache, member, image) == {f"{m} {p}": 403 for m, p, _ in ACTIONS}


async def test_admin_decision_is_remembered_offline(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    keystone: dict[str, Any],
) -> None:
    edgecache = await make_edgecache(failures_to_offline=1, probe_interval=0.05, **keystone)
    member = glance.add_project("p1")
    assert await cached_ids(edgecache) == []
    async with edgecache.get("/v2/cache", headers={"X-Auth-Token": member}) as resp:
        assert resp.status == 403
    await go_offline(edgecache, upstream_server)
    assert await cached_ids(edgecache) == []
    async with edgecache.get("/v2/cache", headers={"X-Auth-Token": member}) as resp:
        assert resp.status == 403


async def test_each_actions_decision_is_remembered_apart_offline(
    glance: FakeGlance, upstream_server: UpstreamServer, make_edgecache: EdgecacheFactory
) -> None:
    glance.cache_enabled = True
    glance.cache_policy = {"cache_list": {"p1"}}
    edgecache = await make_edgecache(failures_to_offline=1, probe_interval=0.05)
    member = {"X-Auth-Token": glance.add_project("p1")}
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with edgecache.get(f"/v2/images/{image.id}", headers=member) as resp:
        assert resp.status == 200  # the record is remembered; cache_image is never asked
    async with edgecache.get("/v2/cache", headers=member) as resp:
        assert resp.status == 200
    async with edgecache.delete("/v2/cache", headers=member) as resp:
        assert resp.status == 403
    await go_offline(edgecache, upstream_server)
    async with edgecache.get("/v2/cache", headers=member) as resp:
        assert resp.status == 200
    async with edgecache.post("/v2/cache/prune", headers=member) as resp:
        assert resp.status == 403
    async with edgecache.put(f"/v2/cache/{image.id}", headers=member) as resp:
        assert resp.status == 503
        assert "Retry-After" in resp.headers


@pytest.mark.parametrize("failure", [500, 503])
async def test_a_glance_that_fails_to_answer_leaves_the_remembered_decision(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, failure: int
) -> None:
    glance.cache_enabled = True
    edgecache = await make_edgecache()
    member = {"X-Auth-Token": glance.add_project("p1")}
    async with edgecache.get("/v2/cache", headers=ADMIN) as resp:
        assert resp.status == 200
    async with edgecache.get("/v2/cache", headers=member) as resp:
        assert resp.status == 403
    glance.cache_answer = failure
    async with edgecache.get("/v2/cache", headers=ADMIN) as resp:
        assert resp.status == 200
    async with edgecache.get("/v2/cache", headers=member) as resp:
        assert resp.status == 403
    async with edgecache.delete("/v2/cache", headers=ADMIN) as resp:
        assert resp.status == 503  # cache_delete was never decided for the admin
