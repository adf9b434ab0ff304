"""Pass-through of any request to the upstream Glance, bodies streamed both ways."""

from __future__ import annotations

import logging

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.appkeys import UPSTREAM
from edgecache.headers import forwardable
from edgecache.refusals import upstream_unreachable
from edgecache.transfer.send import BYTES_SENT, abort
from edgecache.upstream.client import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

# Bytes of body a handler sent itself (sendfile bypasses aiohttp's own count); for the access
# log and the byte counters.


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
            response[BYTES_SENT] = 0
            async for piece in upstream.content.iter_any():
                await response.write(piece)
                response[BYTES_SENT] += len(piece)
    except TRANSIENT_ERRORS as exc:
        log.warning(
            "could not relay %s %s to the upstream: %s",
            request.method,
            request.path,
            str(exc) or type(exc).__name__,
        )
        if not response.prepared:
            return to_response(request, upstream_unreachable(request.method, request.path))
        abort(request)
        return response
    await response.write_eof()
    return response
