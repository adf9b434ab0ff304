"""A fast synthetic Glance: image records and data (with Range) served from one generated file.

Run as `python -m benchmarks.upstream --dir DIR --sizes N,M --ready-file FILE`. It generates
the content, binds a free loopback port, and writes FILE (JSON: port, content path, digests)
once it is serving. Any non-empty `X-Auth-Token` is accepted. Image ids are created on demand
(`POST /_bench/images`), so each cold measurement can use an id no cache has seen, and every
data GET is counted per image (`GET /_bench/data-gets`) so coalescing can be checked, as are
the image bytes sent (`GET /_bench/data-bytes`) and the Range each data GET asked for (`GET
/_bench/data-ranges`: where a fill resumed). An image created with `hold_at` stops its streams
at that offset until `POST /_bench/release/{id}` (a fill that can be killed there). Glance's
cache API lets any token queue an image (`PUT /v2/cache/{id}`), for prefetches through
`glance cache-queue`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

from aiohttp import web

from benchmarks.content import Digests, generate, prefix_digests

CONTENT_SEED = 20261101


class SyntheticGlance:
    def __init__(self, content: Path, digests: dict[int, Digests]) -> None:
        self.content = content
        self.digests = digests
        self.images: dict[str, Digests] = {}
        self.data_gets: Counter[str] = Counter()
        self.download_checks: Counter[str] = Counter()  # edgecache's one-byte GETs
        self.data_bytes: Counter[str] = Counter()  # handed to the kernel, per image
        self.holds: dict[str, tuple[int, asyncio.Event]] = {}  # image -> offset, its release
        self.data_ranges: dict[str, list[str]] = {}  # each data GET's Range ("" for none)
        self.app = web.Application()
        self.app.router.add_post("/_bench/images", self._create)
        self.app.router.add_get("/_bench/data-gets", self._counts)
        self.app.router.add_get("/_bench/download-checks", self._checks)
        self.app.router.add_get("/_bench/data-bytes", self._bytes)
        self.app.router.add_post("/_bench/release/{id}", self._release)
        self.app.router.add_get("/_bench/data-ranges", self._ranges)
        self.app.router.add_get("/", self._versions)
        self.app.router.add_get("/versions", self._versions)
        self.app.router.add_get("/v2/schemas/{name}", self._schema)
        self.app.router.add_get("/v2/images/{id}", self._record)
        self.app.router.add_get("/v2/images/{id}/file", self._data)
        self.app.router.add_put("/v2/cache/{id}", self._queue)

    async def _create(self, request: web.Request) -> web.Response:
        asked = await request.json()
        size = int(asked["size"])
        if size not in self.digests:
            raise web.HTTPBadRequest(text=f"no content of {size} bytes was generated")
        image_id = str(uuid.uuid4())
        self.images[image_id] = self.digests[size]
        if "hold_at" in asked:
            self.holds[image_id] = (int(asked["hold_at"]), asyncio.Event())
        return web.json_response({"id": image_id})

    async def _release(self, request: web.Request) -> web.Response:
        _, release = self.holds[request.match_info["id"]]
        release.set()
        return web.Response(status=204)

    async def _versions(self, request: web.Request) -> web.Response:
        """What clients (and `edgecache warm`) read before anything else."""
        document = {"versions": [{"id": "v2.17", "status": "CURRENT", "links": []}]}
        return web.json_response(document, status=300 if request.path == "/" else 200)

    async def _schema(self, request: web.Request) -> web.Response:
        return web.json_response({"name": request.match_info["name"], "properties": {}})

    async def _counts(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.data_gets))

    async def _checks(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.download_checks))

    async def _bytes(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.data_bytes))

    async def _ranges(self, request: web.Request) -> web.Response:
        return web.json_response(self.data_ranges)

    async def _queue(self, request: web.Request) -> web.Response:
        """Glance's `cache_image` policy, as edgecache asks it before it prefetches."""
        self._image(request)
        return web.Response(status=202)

    def _image(self, request: web.Request) -> tuple[str, Digests]:
        if not request.headers.get("X-Auth-Token"):
            raise _glance_error(web.HTTPUnauthorized, "The request requires authentication.")
        image_id = request.match_info["id"]
        if image_id not in self.images:
            raise _glance_error(web.HTTPNotFound, f"No image found with ID {image_id}")
        return image_id, self.images[image_id]

    async def _record(self, request: web.Request) -> web.Response:
        image_id, digests = self._image(request)
        return web.json_response(_record(image_id, digests))

    async def _data(self, request: web.Request) -> web.StreamResponse:
        image_id, digests = self._image(request)
        if request.headers.get("Range") == "bytes=0-0":
            self.download_checks[image_id] += 1
        elif request.method == "GET":
            self.data_gets[image_id] += 1
            self.data_ranges.setdefault(image_id, []).append(request.headers.get("Range", ""))
        wanted = _parse_range(request.headers.get("Range"), digests.size)
        if wanted is None:
            start, end = 0, digests.size
            response = web.StreamResponse(status=200)
            response.headers["Content-MD5"] = digests.md5
        else:
            start, end = wanted
            if start >= end:
                raise web.HTTPRequestRangeNotSatisfiable(
                    headers={"Content-Range": f"bytes */{digests.size}"}
                )
            response = web.StreamResponse(status=206)
            response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{digests.size}"
        response.content_type = "application/octet-stream"
        response.content_length = end - start
        await response.prepare(request)  # a StreamResponse sends its headers right here
        if request.method == "GET" and request.transport is not None:
            with self.content.open("rb") as source:
                source.seek(start)
                try:
                    await self._send(request.transport, source, image_id, start, end)
                finally:  # sendfile leaves the file where it stopped, failed or not
                    self.data_bytes[image_id] += source.tell() - start
        await response.write_eof()
        return response

    async def _send(
        self, transport: asyncio.Transport, source: BinaryIO, image_id: str, start: int, end: int
    ) -> None:
        """Bytes [start, end) of the content, pausing at the image's hold until released."""
        loop = asyncio.get_running_loop()
        hold, release = self.holds.get(image_id, (end, None))
        if release is not None and start < hold < end:
            await loop.sendfile(transport, source, start, hold - start)
            await release.wait()
            start = hold
        await loop.sendfile(transport, source, start, end - start)


def _record(image_id: str, digests: Digests) -> dict[str, Any]:
    return {
        "id": image_id,
        "name": f"bench-{digests.size}",
        "status": "active",
        "visibility": "public",
        "size": digests.size,
        "checksum": digests.md5,
        "os_hash_algo": "sha512",
        "os_hash_value": digests.sha512,
        "disk_format": "raw",
        "container_format": "bare",
        "self": f"/v2/images/{image_id}",
        "file": f"/v2/images/{image_id}/file",
        "schema": "/v2/schemas/image",
    }


def _glance_error(kind: type[web.HTTPException], message: str) -> web.HTTPException:
    error = kind(content_type="application/json")
    error.text = json.dumps({"message": message, "code": error.status, "title": error.reason})
    return error


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `bytes=` range; None (serve it all) for anything else."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first, _, last = header.removeprefix("bytes=").partition("-")
    if not first:
        return max(0, size - int(last)), size
    return int(first), min(size, int(last) + 1) if last else size


async def serve(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    content = directory / "content.bin"
    sizes = [int(size) for size in args.sizes.split(",")]
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, generate, content, max(sizes), CONTENT_SEED)
    digests = await loop.run_in_executor(None, prefix_digests, content, sizes)
    runner = web.AppRunner(SyntheticGlance(content, digests).app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, 0).start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ready = {
        "port": port,
        "content": str(content),
        "digests": {str(size): asdict(found) for size, found in digests.items()},
    }
    await loop.run_in_executor(None, _announce, Path(args.ready_file), ready)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _announce(path: Path, ready: dict[str, Any]) -> None:
    """Write the ready file so that it appears whole: a poller never reads half of it."""
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(ready))
    staging.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", required=True, help="where to write the generated content")
    parser.add_argument("--sizes", required=True, help="image sizes in bytes, comma-separated")
    parser.add_argument("--ready-file", required=True, help="JSON written once serving")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
