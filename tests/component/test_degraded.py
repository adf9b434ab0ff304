"""The daemon keeps answering when the disk is full or the upstream talks nonsense."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections import namedtuple

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgecache.documents import DocumentStore
from edgecache.store import evict
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance

Usage = namedtuple("Usage", "total used free")


async def fetch_source(client: TestClient, image_id: str, token: str) -> tuple[str, bytes]:
    async with client.get(f"/v2/images/{image_id}/file", headers={"X-Auth-Token": token}) as r:
        assert r.status == 200
        return r.headers["X-Edgecache-Source"], await r.read()


async def test_full_filesystem_passes_data_through_then_recovers(
    glance: FakeGlance, edgecache: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    real_usage = shutil.disk_usage
    monkeypatch.setattr(evict.shutil, "disk_usage", lambda path: Usage(10 * MiB, 10 * MiB, 0))
    assert await fetch_source(edgecache, image.id, token) == ("upstream", image.data)
    monkeypatch.setattr(evict.shutil, "disk_usage", real_usage)
    assert await fetch_source(edgecache, image.id, token) == ("fill", image.data)
    assert await fetch_source(edgecache, image.id, token) == ("cache", image.data)


async def test_index_write_failures_do_not_fail_metadata_reads(
    glance: FakeGlance, edgecache: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")

    async def disk_full(*args: object, **kwargs: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(DocumentStore, "put", disk_full)
    async with edgecache.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        assert (await resp.json())["id"] == image.id


@pytest.mark.parametrize(
    "body", [b"<html>proxy error page</html>", b'{"id": "../../etc/passwd", "size": 1}', b"[]"]
)
async def test_an_upstream_record_that_is_not_one_is_a_502(
    make_edgecache: EdgecacheFactory, body: bytes
) -> None:
    async def record(request: web.Request) -> web.Response:
        return web.Response(body=body)

    liar = web.Application()
    liar.router.add_get("/v2/images/{id}", record)
    server = TestServer(liar, host="127.0.0.1")
    await server.start_server()
    try:
        edgecache = await make_edgecache(upstream=str(server.make_url("")).rstrip("/"))
        image_id = "3f1c3b3e-0000-4000-8000-000000000000"
        async with edgecache.get(
            f"/v2/images/{image_id}/file",
            headers={"X-Auth-Token": "t", "Accept": "application/json"},
        ) as resp:
            assert resp.status == 502
            assert (await resp.json())["code"] == "502 Bad Gateway"
    finally:
        await server.close()


async def test_an_upstream_that_answers_garbage_is_not_a_500(
    make_edgecache: EdgecacheFactory,
) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"8gL-\xf8#\x8b not HTTP at all\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        edgecache = await make_edgecache(upstream=f"http://127.0.0.1:{port}")
        for method, path in (("GET", "/v2/images"), ("HEAD", "/v2/tasks"), ("POST", "/v2/images")):
            async with edgecache.request(method, path, headers={"X-Auth-Token": "t"}) as resp:
                assert resp.status in (401, 502, 503), (method, path, resp.status)
    finally:
        server.close()
