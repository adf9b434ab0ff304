"""The daemon's own endpoints: `/healthz` for liveness, `/metrics` for Prometheus."""

from __future__ import annotations

from aiohttp import web

from edgecache.appkeys import CACHE, METRICS, UPSTREAM
from edgecache.metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    """Alive (200) whether or not the uplink is; the body says which."""
    uplink = request.app[UPSTREAM].uplink
    return web.json_response(
        {
            "status": "ok",
            "uplink": "up" if uplink.online else "down",
            "uplink_changed_at": uplink.changed_at,
            "uplink_reason": uplink.reason,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    await request.app[CACHE].publish_gauges()
    response = web.Response(body=request.app[METRICS].render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response
