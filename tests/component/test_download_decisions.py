"""Glance's download decision for every byte, and decisions remembered per identity.

The fake Glance follows Glance's default policy: a reader-only token sees images
(`get_image`) but may not download them (`download_image` needs `member`), and deactivated
images are not downloadable by non-admins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edgecache.authorization.identity import TokenHasher
from edgecache.authorization.keystone import Keystone, TokenInfo
from edgecache.config import ServiceCredentials
from tests.conftest import (
    EdgecacheFactory,
    UpstreamServer,
    free_port,
    go_offline,
    go_online,
    random_bytes,
)
from tests.fakeglance import SERVICE_USER, FakeGlance, FakeImage, service_credentials

DOWNLOAD_REFUSED = "You are not authorized to complete download_image action"


async def fetch(
    client: TestClient, image: FakeImage, token: str, *, method: str = "GET", **headers: str
) -> tuple[int, bytes]:
    async with client.request(
        method,
        f"/v2/images/{image.id}/file",
        headers={"X-Auth-Token": token, "Accept": "application/json", **headers},
    ) as resp:
        return resp.status, await resp.read()


@pytest.fixture
async def edge_keystone(glance: FakeGlance) -> AsyncIterator[str]:
    server = TestServer(glance.make_keystone_app(), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/v3"))
    await server.close()


@pytest.fixture
async def keystone_edgecache(
    make_edgecache: EdgecacheFactory, glance_url: str, edge_keystone: str
) -> TestClient:
    """Service credentials at the region's Keystone; callers' tokens validated at the edge's."""
    return await make_edgecache(
        failures_to_offline=1,
        probe_interval=0.05,
        keystone_validation_url=edge_keystone,
        **service_credentials(glance_url),
    )


@pytest.mark.parametrize("visibility", ["private", "shared", "public", "community"])
async def test_a_reader_gets_glances_refusal_in_every_state(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    keystone_edgecache: TestClient,
    visibility: str,
) -> None:
    edgecache = keystone_edgecache
    member, reader = glance.add_project("p1"), glance.add_reader("p1")
    image = glance.add_image(random_bytes(300_000), owner="p1", visibility=visibility)

    def refused(answer: tuple[int, bytes]) -> bool:
        status, body = answer
        return status == 403 and DOWNLOAD_REFUSED.encode() in body and image.data[:100] not in body

    assert refused(await fetch(edgecache, image, reader))  # cold
    assert glance.data_requests[image.id] == 0  # no fill was started for the reader
    assert await fetch(edgecache, image, member) == (200, image.data)
    assert glance.data_requests[image.id] == 1
    assert refused(await fetch(edgecache, image, reader))  # cached
    assert refused(await fetch(edgecache, image, reader, Range="bytes=10-20"))
    assert (await fetch(edgecache, image, reader, method="HEAD"))[0] == 403
    assert (await fetch(edgecache, image, member, method="HEAD"))[0] == 200
    await go_offline(edgecache, upstream_server)
    assert (await fetch(edgecache, image, reader))[0] == 403
    assert (await fetch(edgecache, image, reader, Range="bytes=10-20"))[0] == 403
    assert await fetch(edgecache, image, member) == (200, image.data)


async def test_a_cold_refusal_never_becomes_the_fill_others_wait_on(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    member, reader = glance.add_project("p1"), glance.add_reader("p1")
    image = glance.add_image(random_bytes(200_000), owner="p1")
    image.faults.hold_at = 0  # a fill, if one started, would stay open
    assert (await fetch(edgecache, image, reader))[0] == 403
    assert not image.faults.reached_hold.is_set()
    image.faults.hold_at = None
    assert await fetch(edgecache, image, member) == (200, image.data)
    assert glance.data_requests[image.id] == 1


async def test_a_deactivated_image_is_refused_from_the_cache(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    member = glance.add_project("p1")
    image = glance.add_image(random_bytes(100_000), owner="p1")
    assert await fetch(edgecache, image, member) == (200, image.data)
    image.status = "deactivated"
    status, body = await fetch(edgecache, image, member)
    assert status == 403
    assert image.data[:100] not in body


async def test_a_renewed_token_keeps_booting_through_an_outage(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    token, other_project = glance.add_project("p1"), glance.add_project("p2")
    private = glance.add_image(random_bytes(100_000), owner="p1")
    public = glance.add_image(random_bytes(100_000), owner="admin-project", visibility="public")
    never_asked = glance.add_image(random_bytes(1000), owner="p1")
    assert await fetch(edgecache, private, token) == (200, private.data)
    assert await fetch(edgecache, public, glance.add_project("p9")) == (200, public.data)  # cached
    assert (await fetch(edgecache, public, other_project))[0] == 200
    await go_offline(edgecache, upstream_server)
    # Issued during the outage (Keystone at the edge still answers): same user, same project.
    renewed = glance.renew(token)
    assert await fetch(edgecache, private, renewed) == (200, private.data)
    assert await fetch(edgecache, public, renewed) == (200, public.data)  # a member, open image
    assert (await fetch(edgecache, never_asked, renewed))[0] == 404  # Glance never said
    assert (await fetch(edgecache, private, glance.renew(other_project)))[0] == 404
    # A user never seen here: its token may be valid, but what Glance would answer it cannot
    # be known now (503, as keystonemiddleware answers when it cannot validate a token).
    assert (await fetch(edgecache, private, glance.add_project("p1", user="u2")))[0] == 503
    assert (await fetch(edgecache, private, "not-a-token"))[0] == 401


async def test_a_token_whose_role_was_removed_is_another_identity(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(100_000), owner="p1")
    assert await fetch(edgecache, image, token) == (200, image.data)
    await go_offline(edgecache, upstream_server)
    demoted = glance.renew(token)
    glance.readers.add(demoted)  # the same user, now with only the reader role
    assert (await fetch(edgecache, image, demoted))[0] == 503  # an identity never seen here


async def test_a_reader_identity_offline_gets_no_open_image_bytes_it_never_asked_for(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    reader = glance.add_reader("p1")
    seen = glance.add_image(random_bytes(1000), owner="p1")
    public = glance.add_image(random_bytes(100_000), owner="admin-project", visibility="public")
    assert (await fetch(edgecache, public, glance.add_project("p2")))[0] == 200  # now cached
    async with edgecache.get(f"/v2/images/{seen.id}", headers={"X-Auth-Token": reader}) as resp:
        assert resp.status == 200  # the reader's identity is known to Glance
    await go_offline(edgecache, upstream_server)
    status, body = await fetch(edgecache, public, glance.renew(reader))
    assert status == 503
    assert public.data[:100] not in body


def test_an_identity_is_user_scope_and_roles() -> None:
    hasher = TokenHasher(b"k" * 32)

    def key(user: str, project: str, *roles: str) -> str:
        info = TokenInfo(user, project, f"project:{project}", 0.0, frozenset(roles))
        return hasher.identity(info).key

    assert key("u", "p", "member", "reader") == key("u", "p", "reader", "member")
    assert key("u", "p", "member") != key("u", "p", "reader")
    assert key("u", "p", "member") != key("u", "q", "member")
    assert key("u", "p", "member") != key("v", "p", "member")
    assert (
        key("u", "p", "member")
        != TokenHasher(b"x" * 32)
        .identity(TokenInfo("u", "p", "project:p", 0.0, frozenset({"member"})))
        .key
    )


async def test_boot_documents_are_cached_before_anyone_asks(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    assert await fetch(edgecache, image, token) == (200, image.data)
    await go_offline(edgecache, upstream_server)
    for path in ("/versions", "/v2/schemas/image", "/v2/schemas/images"):
        async with edgecache.get(path, headers={"X-Auth-Token": glance.renew(token)}) as resp:
            assert resp.status == 200, path
            assert resp.headers["X-Edgecache-Source"] == "cache"


async def test_an_unreachable_keystone_is_not_asked_again_for_every_new_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    credentials = ServiceCredentials(
        f"http://127.0.0.1:{free_port()}/v3", SERVICE_USER[0], SERVICE_USER[1], "service"
    )
    async with aiohttp.ClientSession() as session:
        keystone = Keystone(credentials, session)
        assert await keystone.validate("token-1") is None
        assert await keystone.validate("token-2") is None
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1  # the second token was not sent to an unreachable Keystone
    assert "could not validate callers' tokens with Keystone" in warnings[0].getMessage()


async def test_offline_only_keystones_no_makes_a_401(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    """With the edge's Keystone up: a token it does not know is invalid (401); a valid token
    of an identity Glance never answered cannot be judged here (503), nor can an expired one
    pass (401)."""
    edgecache = keystone_edgecache
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    assert await fetch(edgecache, image, token) == (200, image.data)
    await go_offline(edgecache, upstream_server)
    assert (await fetch(edgecache, image, "never-issued-by-keystone"))[0] == 401
    stranger = glance.add_project("p1", user="u-new")
    status, body = await fetch(edgecache, image, stranger)
    assert status == 503
    assert image.data not in body
    expired = glance.renew(token)
    glance.token_expiry[expired] = time.time() - 1
    assert (await fetch(edgecache, image, expired))[0] == 401


async def test_an_image_without_data_is_answered_as_glance_answers_it(
    glance: FakeGlance, edgecache: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """tempest's test_register_upload_get_image_file: a registered image with no data yet."""
    token = glance.add_project("p1")
    queued = glance.add_image(b"", owner="p1", status="queued")
    with caplog.at_level(logging.ERROR):
        for method in ("GET", "HEAD"):
            status, body = await fetch(edgecache, queued, token, method=method)
            assert (status, body) == (204, b""), method
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    reader = glance.add_reader("p1")
    assert (await fetch(edgecache, queued, reader))[0] == 403  # Glance still decides


async def test_edgecaches_own_5xx_answers_are_error_sentences(
    glance: FakeGlance, edgecache: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    glance.record_overrides[image.id] = b"<html>not a record</html>"
    with caplog.at_level(logging.ERROR):
        assert (await fetch(edgecache, image, token))[0] == 502
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith(f"edgecache answered GET /v2/images/{image.id}/file with 502")
    assert "did not answer with an image record" in errors[0]


async def test_a_token_first_seen_offline_keeps_its_roles_once_glance_accepts_it(
    glance: FakeGlance, upstream_server: UpstreamServer, keystone_edgecache: TestClient
) -> None:
    edgecache = keystone_edgecache
    booted = glance.add_image(random_bytes(1000), owner="admin-project", visibility="public")
    other = glance.add_image(random_bytes(1000), owner="admin-project", visibility="public")
    for image in (booted, other):
        assert (await fetch(edgecache, image, glance.add_project("p9")))[0] == 200  # cached
    await go_offline(edgecache, upstream_server)
    newcomer = glance.add_project("p2", user="u-new")
    assert (await fetch(edgecache, booted, newcomer))[0] == 503  # valid, but never answered
    await go_online(edgecache, upstream_server)
    assert (await fetch(edgecache, booted, newcomer))[0] == 200  # Glance accepts it now
    await go_offline(edgecache, upstream_server)
    # Keystone's roles (member) are remembered with the identity: Glance's default download
    # rule lets it have the open image it never asked about.
    assert await fetch(edgecache, other, newcomer) == (200, other.data)
