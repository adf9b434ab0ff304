"""The daemon's own endpoints: `/healthz` for liveness, `/metrics` for Prometheus."""

from __future__ import annotations

from aiohttp import web

from edgecache.appkeys import METRICS
from edgecache.metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
