"""A request that found the upstream connections of its kind all in use for too long: 503."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from edgecache.api.answers import to_response
from edgecache.refusals import upstream_busy
from edgecache.throttle import ThrottledLog
from edgecache.upstream.pools import PoolExhausted

log = logging.getLogger(__name__)
BUSY_LOG = web.AppKey("busy_log", ThrottledLog)


def busy_log() -> ThrottledLog:
    return ThrottledLog(log, logging.WARNING)


@web.middleware
async def refuse_when_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except PoolExhausted as exhausted:
        request.app[BUSY_LOG].log(
            "answered 503 to %s %s: %s; if this lasts, raise [upstream] %s_connections "
            "or add capacity upstream",
            request.method,
            request.path,
            exhausted,
            exhausted.pool,
        )
        return to_response(request, upstream_busy(exhausted))
