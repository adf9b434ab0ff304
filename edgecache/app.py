"""The application factory: components built once, routes, start-up and shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from edgecache.api.data import image_file
from edgecache.api.ops import healthz, metrics
from edgecache.api.proxy import passthrough
from edgecache.api.versions import versions
from edgecache.appkeys import CACHE, METRICS, SETTINGS, UPSTREAM
from edgecache.config import Settings
from edgecache.metrics import Metrics
from edgecache.store.cache import ImageCache
from edgecache.upstream import Upstream

IMAGE_ID = r"{image_id:[^/]+}"


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=0)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_components)
    router = app.router
    router.add_get("/", versions, allow_head=False)
    router.add_get("/versions", versions, allow_head=False)
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics, allow_head=False)
    router.add_route("GET", f"/v2/images/{IMAGE_ID}/file", image_file)
    router.add_route("HEAD", f"/v2/images/{IMAGE_ID}/file", image_file)
    router.add_route("*", "/{tail:.*}", passthrough)
    return app


async def _components(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    upstream = Upstream(settings, app[METRICS])
    await upstream.start()
    app[UPSTREAM] = upstream
    try:
        app[CACHE] = await ImageCache.open(settings, upstream, app[METRICS])
        try:
            yield
        finally:
            await app[CACHE].close()
    finally:
        await upstream.close()
