"""Pass-through of any request to the upstream Glance, bodies streamed both ways."""

from __future__ import annotations

import logging

from aiohttp import web

from edgecache.api.transfer import abort
from edgecache.appkeys import UPSTREAM
from edgecache.errors import glance_error
from edgecache.headers import forwardable
from edgecache.upstream import TRANSIENT_ERRORS, UpstreamAnswer

log = logging.getLogger(__name__)


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Forward the request unchanged and stream the answer back unchanged."""
    headers = forwardable(request.headers)
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    body = request.content if request.body_exists else None
    response = web.StreamResponse()
    try:
        async with request.app[UPSTREAM].request(
            request.method, request.path_qs, headers, data=body
        ) as upstream:
            response.set_status(upstream.status, upstream.reason)
            response.headers.extend(forwardable(upstream.headers))
            response.headers["X-Edgecache-Source"] = "upstream"
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for piece in upstream.content.iter_any():
                await response.write(piece)
    except TRANSIENT_ERRORS as exc:
        log.warning("upstream failed during %s %s: %r", request.method, request.path, exc)
        if not response.prepared:
            return upstream_unreachable()
        abort(request)
        return response
    await response.write_eof()
    return response


def relay(answer: UpstreamAnswer) -> web.Response:
    """Hand an upstream answer that was read whole back to the caller as it was."""
    return web.Response(status=answer.status, body=answer.body, headers=forwardable(answer.headers))


def upstream_unreachable() -> web.Response:
    return glance_error(
        503,
        "The regional image service cannot be reached from this edge site.",
        {"Retry-After": "30"},
    )
