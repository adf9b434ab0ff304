"""Uplink loss: the edge keeps serving what Glance allowed before, and nothing more."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE, DOCUMENTS, REVALIDATOR, SETTINGS, UPSTREAM
from edgecache.documents import SHARED_SCOPE, Document
from tests.conftest import (
    EdgecacheFactory,
    MiB,
    UpstreamServer,
    go_offline,
    go_online,
    random_bytes,
)
from tests.fakeglance import FakeGlance, FakeImage, service_credentials

VISIBILITIES = {
    "public": {},
    "community": {},
    "private": {},
    "shared-accepted": {"p2": "accepted"},
    "shared-pending": {"p2": "pending"},
}


async def status_and_body(client: TestClient, path: str, token: str | None) -> tuple[int, bytes]:
    headers = {"X-Auth-Token": token} if token else {}
    async with client.get(path, headers=headers) as resp:
        return resp.status, await resp.read()


@pytest.fixture
async def offline_edgecache(make_edgecache: EdgecacheFactory) -> TestClient:
    return await make_edgecache(failures_to_offline=1, probe_interval=0.05)


async def test_no_leak_across_projects_online_offline_online(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    edgecache = offline_edgecache
    tokens = {project: glance.add_project(project) for project in ("p1", "p2", "p3")}
    images: dict[str, FakeImage] = {}
    for label, members in VISIBILITIES.items():
        visibility = label.split("-")[0]
        images[label] = glance.add_image(
            random_bytes(256 * 1024), owner="p1", visibility=visibility, members=dict(members)
        )

    async def observe() -> dict[tuple[str, str, str], tuple[int, bytes]]:
        seen = {}
        for label, image in images.items():
            for project, token in [*tokens.items(), ("none", None), ("forged", "forged")]:
                for kind, path in (
                    ("record", f"/v2/images/{image.id}"),
                    ("data", f"/v2/images/{image.id}/file"),
                ):
                    seen[(label, project, kind)] = await status_and_body(edgecache, path, token)
        return seen

    online = await observe()
    # Glance's own answers, as a sanity check of the fake: p3 sees only open images.
    assert online[("private", "p3", "data")][0] == 404
    assert online[("shared-accepted", "p2", "data")] == (200, images["shared-accepted"].data)
    assert online[("public", "none", "record")][0] == 401

    await go_offline(edgecache, upstream_server)
    offline = await observe()
    for key, (status, body) in online.items():
        offline_status, offline_body = offline[key]
        assert offline_status == status, key
        if status == 200:
            assert offline_body == body, key
        else:
            assert images[key[0]].data[:64] not in offline_body, key

    await go_online(edgecache, upstream_server)
    assert await observe() == online


async def test_uplink_state_in_healthz_metrics_and_logs(
    upstream_server: UpstreamServer,
    offline_edgecache: TestClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    edgecache = offline_edgecache

    async def state() -> tuple[str, str]:
        health = await (await edgecache.get("/healthz")).json()
        metrics = await (await edgecache.get("/metrics")).text()
        up = next(line for line in metrics.splitlines() if line.startswith("edgecache_uplink_up"))
        return health["uplink"], up.split()[-1]

    assert await state() == ("up", "1.0")
    await go_offline(edgecache, upstream_server)
    for _ in range(3):
        assert await state() == ("down", "0.0")
    await go_online(edgecache, upstream_server)
    assert await state() == ("up", "1.0")
    transitions = [r.message for r in caplog.records if r.name == "edgecache.upstream.uplink"]
    assert len(transitions) == 2
    assert "offline" in transitions[0]
    assert "back online" in transitions[1]


async def test_offline_metadata_is_marked_with_its_age(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    edgecache = offline_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(
        b"x" * 100, owner="p1", visibility="shared", members={"p2": "accepted"}
    )
    paths = [
        "/",
        "/versions",
        "/v2/schemas/image",
        "/v2/images?limit=10",
        f"/v2/images/{image.id}",
        f"/v2/images/{image.id}/members",
    ]
    online = {path: await status_and_body(edgecache, path, token) for path in paths}
    assert all(status in (200, 300) for status, _ in online.values())
    await go_offline(edgecache, upstream_server)
    for path in paths:
        async with edgecache.get(path, headers={"X-Auth-Token": token}) as resp:
            assert resp.status == online[path][0], path
            assert resp.headers["X-Edgecache-Source"] == "cache"
            assert resp.headers["X-Edgecache-Uplink"] == "down"
            assert int(resp.headers["Age"]) >= 0
            if path not in ("/", "/versions"):  # links are rewritten to the caller's address
                assert await resp.read() == online[path][1]
    async with edgecache.get("/v2/images?limit=99", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 503  # a list never fetched cannot be made up
        assert resp.headers["Retry-After"]


async def test_uncached_data_offline_is_503_with_retry_after(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    edgecache = offline_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", token))[0] == 200
    await go_offline(edgecache, upstream_server)
    async with edgecache.get(
        f"/v2/images/{image.id}/file",
        headers={"X-Auth-Token": token, "Accept": "application/json"},
    ) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        body = await resp.json()
        assert body["code"] == "503 Service Unavailable"
        assert "cannot be reached" in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/images"),
        ("PATCH", "/v2/images/0b9a2f7e-aaaa-4000-8000-000000000000"),
        ("DELETE", "/v2/images/0b9a2f7e-aaaa-4000-8000-000000000000"),
        ("PUT", "/v2/images/0b9a2f7e-aaaa-4000-8000-000000000000/file"),
        ("POST", "/v2/images/0b9a2f7e-aaaa-4000-8000-000000000000/members"),
    ],
)
async def test_writes_offline_are_refused(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    offline_edgecache: TestClient,
    method: str,
    path: str,
) -> None:
    token = glance.add_project("p1")
    await go_offline(offline_edgecache, upstream_server)
    async with offline_edgecache.request(
        method, path, headers={"X-Auth-Token": token, "Accept": "application/json"}, data=b"{}"
    ) as resp:
        assert resp.status == 503
        assert (await resp.json())["title"] == "Service Unavailable"


async def test_offline_requests_do_not_wait_for_the_upstream(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    """A black-hole upstream (accepts, never answers): once offline, nobody is sent there."""
    accepted = 0

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read()  # hold the connection until the client gives up

    hole = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = hole.sockets[0].getsockname()[1]
    try:
        edgecache = await make_edgecache(
            upstream=f"http://127.0.0.1:{port}",
            read_timeout=0.5,
            failures_to_offline=1,
            probe_interval=3600,
        )
        # Timed out, now offline, token never seen: it cannot be validated now (503, not 401).
        async with edgecache.get("/v2/images", headers={"X-Auth-Token": "t"}) as resp:
            assert resp.status == 503
        assert not edgecache.server.app[UPSTREAM].uplink.online
        before = accepted
        for _ in range(10):
            async with edgecache.get("/v2/images", headers={"X-Auth-Token": "t"}) as resp:
                assert resp.status == 503
        assert accepted == before
    finally:
        hole.close()


async def test_fill_survives_a_short_outage_and_aborts_on_a_long_one(
    glance: FakeGlance, upstream_server: UpstreamServer, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(failures_to_offline=1, probe_interval=0.05, stall_timeout=30)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    image.faults.hold_at = MiB
    async with edgecache.get(
        f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
    ) as resp:
        head = await resp.content.readexactly(1024)
        await image.faults.reached_hold.wait()
        await upstream_server.stop()  # the stream breaks; resumes fail: offline
        await edgecache.server.app[UPSTREAM].uplink.wait_offline(within=30)
        image.faults.release.set()
        await upstream_server.start()  # the probe brings it back; the fill resumes
        assert head + await resp.read() == image.data
    assert glance.data_requests[image.id] == 2

    short_fuse = await make_edgecache(failures_to_offline=1, probe_interval=0.05, stall_timeout=0.5)
    other = glance.add_image(random_bytes(2 * MiB), owner="p1")
    other.faults.hold_at = MiB
    async with short_fuse.get(
        f"/v2/images/{other.id}/file", headers={"X-Auth-Token": token}
    ) as resp:
        await other.faults.reached_hold.wait()
        await upstream_server.stop()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    other.faults.release.set()


async def test_deleted_upstream_while_offline_stops_being_served(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    edgecache = offline_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    path = f"/v2/images/{image.id}/file"
    assert await status_and_body(edgecache, path, token) == (200, image.data)
    await go_offline(edgecache, upstream_server)
    assert await status_and_body(edgecache, path, token) == (200, image.data)
    del glance.images[image.id]  # deleted in the region during the outage
    await go_online(edgecache, upstream_server)
    assert (await status_and_body(edgecache, path, token))[0] == 404
    await go_offline(edgecache, upstream_server)
    assert (await status_and_body(edgecache, path, token))[0] == 404


async def test_tokens_never_reach_logs_or_disk(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    offline_edgecache: TestClient,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file", "/v2/images"):
        await status_and_body(offline_edgecache, path, token)
    await go_offline(offline_edgecache, upstream_server)
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file", "/v2/images"):
        await status_and_body(offline_edgecache, path, token)
        await status_and_body(offline_edgecache, path, "unknown-secret-token")
    await offline_edgecache.close()
    assert token not in caplog.text
    assert files_containing(cache_dir, [token.encode(), b"unknown-secret-token"]) == []


def files_containing(root: Path, needles: list[bytes]) -> list[Path]:
    return [
        path
        for path in root.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


@pytest.mark.parametrize(
    ("visibility", "members", "service_user", "record", "data"),
    [
        ("private", {}, False, 404, 404),
        ("private", {}, True, 404, 404),
        # Glance would allow it, but never said so
        ("shared", {"p3": "accepted"}, False, 404, 404),
        ("shared", {"p3": "accepted"}, True, 404, 404),
        # Without service credentials nothing keeps the remembered record of an open image
        # in step with the region, so it opens the image to nobody who never asked about it.
        ("public", {}, False, 503, 503),
        ("community", {}, False, 503, 503),
        # With them the record is kept young, and Keystone says the caller is a member
        # (Glance's default download rule, [auth] offline_download_roles).
        ("public", {}, True, 200, 200),
        ("community", {}, True, 200, 200),
    ],
)
async def test_offline_a_known_caller_gets_only_open_images_it_never_asked_about(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    visibility: str,
    members: dict[str, str],
    service_user: bool,
    record: int,
    data: int,
) -> None:
    edgecache = await make_edgecache(
        failures_to_offline=1,
        probe_interval=0.05,
        **(service_credentials(upstream_server.url) if service_user else {}),
    )
    owner, other = glance.add_project("p1"), glance.add_project("p3")
    image = glance.add_image(random_bytes(1000), owner="p1", visibility=visibility, members=members)
    unrelated = glance.add_image(random_bytes(10), owner="p3")
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", owner))[0] == 200
    assert (await status_and_body(edgecache, f"/v2/images/{unrelated.id}", other))[0] == 200
    await go_offline(edgecache, upstream_server)
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", other))[0] == record
    status, body = await status_and_body(edgecache, f"/v2/images/{image.id}/file", other)
    assert status == data
    if data != 200:
        assert image.data not in body


@pytest.fixture
async def keystone_edgecache(make_edgecache: EdgecacheFactory, glance_url: str) -> TestClient:
    return await make_edgecache(
        failures_to_offline=1, probe_interval=0.05, **service_credentials(glance_url)
    )


async def test_reconnect_revalidation_takes_away_what_glance_took_away(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    owner, member, outsider = (glance.add_project(p) for p in ("p1", "p2", "p3"))
    shared = glance.add_image(
        random_bytes(1000), owner="p1", visibility="shared", members={"p2": "accepted"}
    )
    deleted = glance.add_image(random_bytes(1000), owner="p1")
    hidden = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    unchanged = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    before = [
        (member, shared, 200),
        (owner, deleted, 200),
        (outsider, hidden, 200),
        (owner, hidden, 200),
        (outsider, unchanged, 200),
    ]
    for token, image, status in before:
        assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", token))[0] == status
    await go_offline(edgecache, upstream_server)
    # While the edge is cut off, the region changes its mind.
    del shared.members["p2"]
    del glance.images[deleted.id]
    hidden.visibility = "private"
    await go_online(edgecache, upstream_server)
    await edgecache.server.app[UPSTREAM].uplink.settle()
    await go_offline(edgecache, upstream_server)
    after = [
        (member, shared, 404),
        (owner, deleted, 404),
        (outsider, hidden, 404),
        (owner, hidden, 200),
        (outsider, unchanged, 200),
    ]
    for token, image, status in after:
        for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file"):
            assert (await status_and_body(edgecache, path, token))[0] == status, (path, status)
    assert not edgecache.server.app[CACHE].store.blob_path(deleted.id).exists()


async def test_decisions_never_outlive_the_token(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    token = glance.add_project("p1")
    glance.token_expiry[token] = time.time() - 1  # Keystone says: already expired
    image = glance.add_image(random_bytes(1000), owner="p1")
    path = f"/v2/images/{image.id}/file"
    assert await status_and_body(keystone_edgecache, path, token) == (200, image.data)
    await go_offline(keystone_edgecache, upstream_server)
    assert (await status_and_body(keystone_edgecache, path, token))[0] == 401


async def test_a_refused_member_list_takes_nothing_from_those_glance_allows(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    """Glance's 403 to a member list of an image that is not shared is about the list."""
    edgecache = offline_edgecache
    booted, curious = glance.add_project("p1"), glance.add_project("p3")
    image = glance.add_image(random_bytes(1000), owner="admin-project", visibility="public")
    assert await status_and_body(edgecache, f"/v2/images/{image.id}/file", booted) == (
        200,
        image.data,
    )
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", booted))[0] == 200
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/members", curious))[0] == 403
    await go_offline(edgecache, upstream_server)
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", booted))[0] == 200
    file = f"/v2/images/{image.id}/file"
    assert await status_and_body(edgecache, file, booted) == (200, image.data)


async def test_a_404_to_another_project_keeps_the_access_of_those_glance_allows(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    edgecache = offline_edgecache
    owner, other = glance.add_project("p1"), glance.add_project("p3")
    image = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    for token in (owner, other):
        assert (await status_and_body(edgecache, f"/v2/images/{image.id}", token))[0] == 200
        assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", token))[0] == 200
    image.visibility = "private"  # the region hides it from p3, not from its owner
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", other))[0] == 404
    await go_offline(edgecache, upstream_server)
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file"):
        assert (await status_and_body(edgecache, path, owner))[0] == 200, path
        status, body = await status_and_body(edgecache, path, other)
        assert status == 404, path
        assert image.data not in body


async def test_a_404_to_the_owner_says_the_image_is_gone_for_everyone(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    owner, other = glance.add_project("p1"), glance.add_project("p3")
    image = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    for token in (owner, other):
        assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", token))[0] == 200
    del glance.images[image.id]
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", owner))[0] == 404
    await go_offline(edgecache, upstream_server)
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file"):
        status, body = await status_and_body(edgecache, path, other)
        assert status == 404, path
        assert image.data not in body


async def test_offline_a_token_glance_never_authenticated_is_unknown(
    glance: FakeGlance, upstream_server: UpstreamServer, offline_edgecache: TestClient
) -> None:
    """Glance serves /versions without looking at the token: its answer vouches for none."""
    edgecache = offline_edgecache
    image = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    member = glance.add_project("p1")
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", member))[0] == 200
    assert (await status_and_body(edgecache, "/versions", "any-string-at-all"))[0] == 200
    await go_offline(edgecache, upstream_server)
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file", "/v2/images"):
        async with edgecache.get(
            path, headers={"X-Auth-Token": "any-string-at-all", "Accept": "application/json"}
        ) as resp:
            assert resp.status == 503, path
            assert resp.headers["Retry-After"]
            message = (await resp.json())["message"]
            assert "this token has not been seen here before" in message, path
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}", None))[0] == 401


async def test_without_keystone_a_token_is_used_offline_for_its_lifetime_only(
    glance: FakeGlance, upstream_server: UpstreamServer, make_edgecache: EdgecacheFactory
) -> None:
    lifetime = 1.0
    edgecache = await make_edgecache(
        failures_to_offline=1, probe_interval=0.05, token_lifetime=lifetime
    )
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    path = f"/v2/images/{image.id}/file"
    first_accepted = time.time()
    assert await status_and_body(edgecache, path, token) == (200, image.data)
    await go_offline(edgecache, upstream_server)
    assert await status_and_body(edgecache, path, token) == (200, image.data)
    # The behaviour under test is the clock: nothing to await but the token's end of life.
    await asyncio.sleep(max(0.0, first_accepted + lifetime + 0.1 - time.time()))
    status, body = await status_and_body(edgecache, path, token)
    assert status == 401  # known to have expired
    assert image.data not in body


async def test_records_of_cached_images_follow_the_region_while_online(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    """An image deactivated or hidden at the region while nobody at the edge asked about it is
    not served offline to those Glance now refuses, once its record has been re-read."""
    edgecache = keystone_edgecache
    owner, other = glance.add_project("p1"), glance.add_project("p3")
    deactivated = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    hidden = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    elsewhere = glance.add_image(random_bytes(10), owner="p3")
    for image in (deactivated, hidden):
        assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", owner))[0] == 200
    assert (await status_and_body(edgecache, f"/v2/images/{elsewhere.id}", other))[0] == 200
    deactivated.status = "deactivated"
    hidden.visibility = "private"
    await edgecache.server.app[REVALIDATOR].refresh_cached(older_than=0)
    age = await metric(edgecache, "edgecache_oldest_cached_image_record_age_seconds")
    assert 0 <= age < 60
    await go_offline(edgecache, upstream_server)
    for image in (deactivated, hidden):
        status, body = await status_and_body(edgecache, f"/v2/images/{image.id}/file", other)
        assert status in (403, 404), image  # what Glance now answers p3
        assert image.data not in body
    status, body = await status_and_body(edgecache, f"/v2/images/{deactivated.id}/file", owner)
    assert status != 200  # deactivated: no download, even for its owner
    assert deactivated.data not in body
    assert (await status_and_body(edgecache, f"/v2/images/{hidden.id}/file", owner))[0] == 200


async def test_an_old_record_opens_its_image_to_nobody_who_never_asked(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    owner, other = glance.add_project("p1"), glance.add_project("p3")
    image = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    elsewhere = glance.add_image(random_bytes(10), owner="p3")
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", owner))[0] == 200
    assert (await status_and_body(edgecache, f"/v2/images/{elsewhere.id}", other))[0] == 200
    await go_offline(edgecache, upstream_server)
    record_max_age = edgecache.server.app[SETTINGS].record_max_age
    documents = edgecache.server.app[DOCUMENTS]
    path = f"/v2/images/{image.id}"
    record = await documents.get(SHARED_SCOPE, path)
    assert record is not None
    aged = Document(
        record.status, record.content_type, record.body, time.time() - record_max_age - 1
    )
    await documents.put(SHARED_SCOPE, path, aged, image.id)
    for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file"):
        status, body = await status_and_body(edgecache, path, other)
        assert status == 503, path
        assert image.data not in body
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", owner))[0] == 200


async def test_the_records_of_cached_images_are_re_read_in_the_background(
    glance: FakeGlance, upstream_server: UpstreamServer, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(record_max_age=0.5, **service_credentials(upstream_server.url))
    owner = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    assert (await status_and_body(edgecache, f"/v2/images/{image.id}/file", owner))[0] == 200
    deadline = time.monotonic() + 30
    while (passes := await metric(edgecache, "edgecache_record_refreshes_total")) < 2:
        assert time.monotonic() < deadline, "the record was not re-read in the background"
        await asyncio.sleep(0.05)  # polling the daemon's own count: two passes, nobody asking
    # Each pass counted re-read the record from Glance (the one cached image).
    assert glance.metadata_requests[image.id] >= 1 + passes


async def metric(client: TestClient, name: str) -> float:
    async with client.get("/metrics") as resp:
        text = await resp.text()
    return float(next(line for line in text.splitlines() if line.startswith(name)).split()[-1])
