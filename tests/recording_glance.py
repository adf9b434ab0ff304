"""A minimal Glance that records every request's headers exactly as they arrived on the wire.

It answers each route of the Glance API edgecache handles with a plausible document (one
public image), serves single byte ranges as Glance does, and lets a test hold image data
transfers of more than one byte open (`hold_data`) to fill a pool.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

IMAGE_ID = "5b7c3a1e-2f4d-4a8b-9c6e-0d1f2a3b4c5d"
IMAGE_DATA = os.urandom(200_000)
RECORD = {
    "id": IMAGE_ID,
    "name": "recorded",
    "status": "active",
    "visibility": "public",
    "owner": "p1",
    "size": len(IMAGE_DATA),
    "checksum": hashlib.md5(IMAGE_DATA).hexdigest(),
    "os_hash_algo": "sha512",
    "os_hash_value": hashlib.sha512(IMAGE_DATA).hexdigest(),
    "disk_format": "raw",
    "container_format": "bare",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path_qs: str
    headers: tuple[tuple[str, str], ...]  # as received, in order, names as the sender wrote them


@dataclass
class RecordingGlance:
    requests: list[Recorded] = field(default_factory=list)
    data_released: asyncio.Event = field(default_factory=asyncio.Event)
    data_started: int = 0

    def __post_init__(self) -> None:
        self.data_released.set()

    def hold_data(self) -> None:
        """Image data answers send their headers, then wait for `release_data`."""
        self.data_released.clear()

    def release_data(self) -> None:
        self.data_released.set()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record], client_max_size=0)
        app.router.add_get("/", self._versions)
        app.router.add_get("/versions", self._versions)
        app.router.add_get("/v2/images", self._list)
        app.router.add_get("/v2/schemas/{name:.+}", self._schema)
        app.router.add_get("/v2/images/{id}", self._record_doc)
        app.router.add_patch("/v2/images/{id}", self._patch)
        app.router.add_get("/v2/images/{id}/members", self._members)
        app.router.add_get("/v2/images/{id}/file", self._data)
        app.router.add_put("/v2/images/{id}/file", self._upload)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        headers = tuple((name.decode(), value.decode()) for name, value in request.raw_headers)
        self.requests.append(Recorded(request.method, request.path_qs, headers))
        return await handler(request)

    async def _versions(self, request: web.Request) -> web.Response:
        base = f"http://{request.host}/v2/"
        version = {"id": "v2.17", "status": "CURRENT", "links": [{"rel": "self", "href": base}]}
        status = 300 if request.path == "/" else 200
        return web.json_response({"versions": [version]}, status=status)

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"images": [RECORD], "schema": "/v2/schemas/images"})

    async def _schema(self, request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["name"], "properties": {}})

    async def _record_doc(self, request: web.Request) -> web.Response:
        return web.json_response(RECORD)

    async def _patch(self, request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(RECORD)

    async def _members(self, request: web.Request) -> web.Response:
        return web.json_response({"members": [], "schema": "/v2/schemas/members"})

    async def _data(self, request: web.Request) -> web.StreamResponse:
        body, status, headers = IMAGE_DATA, 200, {"Content-Type": "application/octet-stream"}
        if "Range" in request.headers:
            wanted = request.http_range
            start, stop = wanted.start or 0, min(wanted.stop or len(body), len(body))
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(body)}"
            body, status = body[start:stop], 206
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if len(body) > 1:
            self.data_started += 1
            await self.data_released.wait()
        await response.write(body)
        await response.write_eof()
        return response

    async def _upload(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)


async def start_recording_glance(glance: RecordingGlance) -> TestServer:
    server = TestServer(glance.app(), host="127.0.0.1")
    await server.start_server()
    return server
