"""What Glance receives through edgecache, header by header, against what it receives from the
caller directly (a recording upstream sees both).

Differences allowed, and why:
- Host names the server the request goes to; hop-by-hop headers belong to each connection.
- Before image data, edgecache asks Glance's download decision with a one-byte GET of the data
  (`Range: bytes=0-0`) carrying the caller's headers: that Range is edgecache's.
- Accept-Encoding is not forwarded on requests whose answers edgecache reads, keeps and gives to
  other callers (records, lists, schemas, versions, members, image data it fills): a coded
  body could be neither parsed nor verified. Pass-through requests (writes) keep it.
- edgecache adds no Via or X-Forwarded-* headers: Glance's policies and logs use neither, and
  the caller's request id already ties Glance's log lines to the caller's.
Everything else arrives as the caller sent it, including no Accept, no User-Agent and no
Accept-Encoding when the caller sent none (aiohttp would add its own).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from edgecache.headers import HOP_BY_HOP, OWN_USER_AGENT, REQUEST_ID
from tests.conftest import start_edgecache
from tests.recording_glance import (
    IMAGE_DATA,
    IMAGE_ID,
    Recorded,
    RecordingGlance,
    start_recording_glance,
)

# The client below sends exactly the headers each test names: aiohttp's own are switched off.
NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
CALLERS = {
    "bare": [("X-Auth-Token", "token-1")],
    "glanceclient": [
        ("User-Agent", "python-glanceclient"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("X-Auth-Token", "token-1"),
        (REQUEST_ID, f"req-{uuid.UUID(int=7)}"),
        ("X-Extra-Probe", "kept as sent"),
    ],
    "lower-case names": [  # as an HTTP/2 proxy in front of edgecache sends them
        ("x-auth-token", "token-1"),
        ("user-agent", "nova-compute"),
        ("accept", "application/json"),
    ],
    "keystoneauth": [
        ("User-Agent", "openstacksdk/4.0 keystoneauth1/5.8 python-requests/2.32 CPython/3.11"),
        ("Accept", "application/json"),
        ("X-Auth-Token", "token-1"),
    ],
}
DOWNLOAD_CHECK = ("range", "bytes=0-0")
PATCH_BODY = b'[{"op": "replace", "path": "/name", "value": "renamed"}]'


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path_qs: str
    body: bytes | None = None
    content_type: str | None = None
    edgecache_reads_the_answer: bool = True


ROUTES = [
    Route("versions", "GET", "/versions"),
    Route("list", "GET", "/v2/images?limit=5&visibility=public"),
    Route("record", "GET", f"/v2/images/{IMAGE_ID}"),
    Route("schema", "GET", "/v2/schemas/image"),
    Route("file", "GET", f"/v2/images/{IMAGE_ID}/file"),
    Route("members", "GET", f"/v2/images/{IMAGE_ID}/members"),
    Route(
        "write",
        "PATCH",
        f"/v2/images/{IMAGE_ID}",
        PATCH_BODY,
        "application/openstack-images-v2.1-json-patch",
        edgecache_reads_the_answer=False,
    ),
    Route(
        "upload",
        "PUT",
        f"/v2/images/{IMAGE_ID}/file",
        IMAGE_DATA,
        "application/octet-stream",
        edgecache_reads_the_answer=False,
    ),
]


@pytest.fixture
async def recording() -> AsyncIterator[tuple[RecordingGlance, TestServer]]:
    glance = RecordingGlance()
    server = await start_recording_glance(glance)
    yield glance, server
    await server.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(skip_auto_headers=NO_AUTO_HEADERS) as session:
        yield session


async def send(
    client: aiohttp.ClientSession, base: str, route: Route, headers: list[tuple[str, str]]
) -> int:
    wanted = list(headers)
    if route.content_type is not None:
        wanted.append(("Content-Type", route.content_type))
    async with client.request(
        route.method, base + route.path_qs, headers=wanted, data=route.body
    ) as response:
        await response.read()
        return response.status


def compared(recorded: Recorded, route: Route) -> list[tuple[str, str]]:
    """The headers a proxy must leave as they are, in order (names in lower case: HTTP names
    are case-insensitive, and edgecache spells the ones it reads its own way)."""
    dropped = set(HOP_BY_HOP) | {"host"}
    if route.edgecache_reads_the_answer:
        dropped.add("accept-encoding")
    return [
        (name.lower(), value) for name, value in recorded.headers if name.lower() not in dropped
    ]


def _lowered(recorded: Recorded) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in recorded.headers]


@pytest.mark.parametrize("caller", sorted(CALLERS))
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
async def test_glance_receives_what_the_caller_sent(
    recording: tuple[RecordingGlance, TestServer],
    client: aiohttp.ClientSession,
    tmp_path: Path,
    route: Route,
    caller: str,
) -> None:
    glance, upstream = recording
    headers = CALLERS[caller]
    assert await send(client, str(upstream.make_url("")), route, headers) < 400
    (direct,) = glance.requests
    sent_names = {name.lower() for name, _ in headers}
    if route.content_type is not None:
        sent_names.add("content-type")
    if route.body is not None:
        sent_names.add("content-length")
    assert {name.lower() for name, _ in direct.headers} == sent_names | {"host"}, (
        "the test client added headers of its own"
    )

    glance.requests.clear()
    edge = await start_edgecache(str(upstream.make_url("")).rstrip("/"), tmp_path / "cache")
    try:
        assert await send(client, str(edge.make_url("")), route, headers) < 400
    finally:
        await edge.close()
    # What edgecache asked for this caller carries its token; the rest is edgecache's own
    # (version documents at start-up) and says so.
    through = [r for r in glance.requests if ("x-auth-token", "token-1") in _lowered(r)]
    own = [r for r in glance.requests if r not in through]
    assert all(("User-Agent", OWN_USER_AGENT) in r.headers for r in own), own
    assert any((r.method, r.path_qs) == (route.method, route.path_qs) for r in through)
    for request in through:  # the request itself, and any it made on the caller's behalf
        received = compared(request, route)
        if route.name == "file" and DOWNLOAD_CHECK in received:
            received.remove(DOWNLOAD_CHECK)
        assert received == compared(direct, route), (
            f"{request.method} {request.path_qs} for {route.name}"
        )


@pytest.mark.parametrize("caller_id", [None, f"req-{uuid.UUID(int=9)}"])
async def test_image_data_answers_carry_a_request_id(
    recording: tuple[RecordingGlance, TestServer],
    client: aiohttp.ClientSession,
    tmp_path: Path,
    caller_id: str | None,
) -> None:
    """Glance's data answers carry X-Openstack-Request-Id; edgecache's (filled, from the cache,
    HEAD) do too: the caller's own id, else one of edgecache's, a new one each time."""
    _glance, upstream = recording
    edge = await start_edgecache(str(upstream.make_url("")).rstrip("/"), tmp_path / "cache")
    headers = {"X-Auth-Token": "token-1", **({REQUEST_ID: caller_id} if caller_id else {})}
    url = edge.make_url(f"/v2/images/{IMAGE_ID}/file")
    seen = []
    try:
        for method, source in (("GET", "fill"), ("GET", "cache"), ("HEAD", "metadata")):
            async with client.request(method, url, headers=headers) as response:
                body = await response.read()
                assert response.status == 200
                assert response.headers["X-Edgecache-Source"] == source
                assert body == (IMAGE_DATA if method == "GET" else b"")
                seen.append(response.headers.get(REQUEST_ID))
    finally:
        await edge.close()
    if caller_id is not None:
        assert seen == [caller_id] * 3
    else:
        assert all(rid is not None and rid.startswith("req-") for rid in seen), seen
        assert len(set(seen)) == 3, seen
