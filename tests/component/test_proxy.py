"""Pass-through, version documents, error relay and authorization by Glance."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MiB, random_bytes
from tests.fakeglance import FakeGlance


async def test_version_document_links_point_at_edgecache(edgecache: TestClient) -> None:
    own = f"http://{edgecache.host}:{edgecache.port}"
    for path, status in (("/", 300), ("/versions", 200)):
        async with edgecache.get(path) as resp:
            assert resp.status == status
            document = await resp.json()
        hrefs = {link["href"] for v in document["versions"] for link in v["links"]}
        assert hrefs == {f"{own}/v2/"}


async def test_list_passes_query_and_identity_through(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    token = glance.add_project("p1")
    glance.add_image(b"x" * 10, owner="p1", name="mine")
    headers = {"X-Auth-Token": token, "X-Openstack-Request-Id": "req-abc"}
    async with edgecache.get(
        "/v2/images?limit=5&sort_key=name&visibility=private", headers=headers
    ) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert [image["name"] for image in body["images"]] == ["mine"]
    _method, path_qs, upstream_headers = glance.requests[-1]
    assert path_qs == "/v2/images?limit=5&sort_key=name&visibility=private"
    assert upstream_headers["X-Auth-Token"] == token
    assert upstream_headers["X-Openstack-Request-Id"] == "req-abc"


async def test_glance_errors_reach_the_caller_unchanged(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    token = glance.add_project("p1")
    missing = "/v2/images/3f1c3b3e-0000-4000-8000-000000000000"
    async with edgecache.get(missing, headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 404
        assert (await resp.json())["code"] == "404 Not Found"
    async with edgecache.get(missing + "/file", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 404
    async with edgecache.get("/v2/images") as resp:
        assert resp.status == 401


async def test_upload_is_streamed_through(glance: FakeGlance, edgecache: TestClient) -> None:
    token = glance.add_project("p1")
    size = 24 * MiB

    async def body():  # type: ignore[no-untyped-def]
        for _ in range(size // MiB):
            yield b"\0" * MiB

    image_id = "5a7c9e2b-1111-4000-8000-000000000000"
    async with edgecache.put(
        f"/v2/images/{image_id}/file",
        data=body(),
        headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"},
    ) as resp:
        assert resp.status == 204
    assert glance.uploads[image_id] == size


async def test_unreachable_upstream_is_a_glance_style_503(
    make_edgecache,  # type: ignore[no-untyped-def]
) -> None:
    edgecache = await make_edgecache(upstream="http://127.0.0.1:9", connect_timeout=1.0)
    async with edgecache.post(
        "/v2/images", headers={"X-Auth-Token": "t", "Accept": "application/json"}, json={}
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert (await resp.json())["title"] == "Service Unavailable"
    # A token never seen here cannot be validated without the region: 503, not 401.
    async with edgecache.get("/v2/images", headers={"X-Auth-Token": "never-seen"}) as resp:
        assert resp.status == 503


@pytest.mark.parametrize(
    ("visibility", "members", "second_project_status"),
    [
        ("private", {}, 404),
        ("shared", {}, 404),
        ("shared", {"p2": "accepted"}, 200),
        ("community", {}, 200),
        ("public", {}, 200),
    ],
)
async def test_cached_bytes_go_only_to_callers_glance_allows(
    glance: FakeGlance,
    edgecache: TestClient,
    visibility: str,
    members: dict[str, str],
    second_project_status: int,
) -> None:
    owner = glance.add_project("p1")
    other = glance.add_project("p2")
    image = glance.add_image(random_bytes(MiB), owner="p1", visibility=visibility, members=members)
    url = f"/v2/images/{image.id}/file"
    async with edgecache.get(url, headers={"X-Auth-Token": owner}) as resp:
        assert await resp.read() == image.data
    async with edgecache.get(url, headers={"X-Auth-Token": other}) as resp:
        assert resp.status == second_project_status
        body = await resp.read()
        assert (body == image.data) is (second_project_status == 200)
    for headers in ({}, {"X-Auth-Token": "forged-or-expired"}):
        async with edgecache.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert image.data[:64] not in await resp.read()
    assert glance.data_requests[image.id] == 1


@pytest.mark.parametrize(("reuse", "upstream_gets"), [(0.0, 3), (30.0, 1)])
async def test_a_fresh_decision_may_be_reused_as_configured(
    glance: FakeGlance, make_edgecache, reuse: float, upstream_gets: int
) -> None:  # type: ignore[no-untyped-def]
    edgecache = await make_edgecache(reuse_decisions_for=reuse)
    token, other = glance.add_project("p1"), glance.add_project("p2")
    image = glance.add_image(b"x" * 100, owner="p1")
    for _ in range(3):
        async with edgecache.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": token}) as r:
            assert r.status == 200
            assert (await r.json())["id"] == image.id
            assert "X-Edgecache-Uplink" not in r.headers
    assert glance.metadata_requests[image.id] == upstream_gets
    async with edgecache.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": other}) as r:
        assert r.status == 404  # another caller is never given the reused answer
