"""One middleware that sees every request: its request id, the access log line and the
request metrics.

The line says who asked for what (request id, method, path), how it went (status, bytes,
duration) and where the bytes came from (cache, fill, upstream, metadata); never a header,
so never a token. Every answer carries a request id, as Glance's do: Glance's own where the
answer is Glance's, else the caller's, else one made up here.
"""

from __future__ import annotations

import logging
import time
import uuid

from aiohttp import web
from aiohttp.typedefs import Handler

from edgecache.api.answers import OWN_ERROR
from edgecache.appkeys import METRICS, UPSTREAM
from edgecache.headers import REQUEST_ID
from edgecache.throttle import ThrottledLog
from edgecache.transfer.send import BYTES_SENT

access_log = logging.getLogger("edgecache.access")
log = logging.getLogger("edgecache")
# edgecache's own 5xx answers, as ERROR sentences (at most a few a minute in a flood), but
# those the uplink's absence explains.
OWN_ERRORS_LOG = web.AppKey("own_errors_log", ThrottledLog)


def own_errors_log() -> ThrottledLog:
    return ThrottledLog(log, logging.ERROR)


PASSTHROUGH_ROUTE = "/{tail}"
_REQUEST_ID = web.RequestKey("request_id", str)


@web.middleware
async def observe_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[_REQUEST_ID] = request.headers.get(REQUEST_ID) or f"req-{uuid.uuid4()}"
    started = time.monotonic()
    status = 500
    response: web.StreamResponse | None = None
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        duration = time.monotonic() - started
        route = _route(request)
        metrics = request.app[METRICS]
        metrics.requests.labels(route, request.method, str(status)).inc()
        metrics.request_duration.labels(route).observe(duration)
        _log(request, response, route, status, duration)
        if _own_failure(request, response, status):
            assert response is not None
            request.app[OWN_ERRORS_LOG].log(
                "edgecache answered %s %s with %d itself (request %s): %s",
                request.method,
                request.path,
                status,
                request[_REQUEST_ID],
                response[OWN_ERROR],
            )


def _own_failure(request: web.Request, response: web.StreamResponse | None, status: int) -> bool:
    """A 5xx edgecache wrote itself, not while the uplink is known to be down: that outage has
    its own log line, and the 503s it causes for data that is not cached are expected."""
    if status < 500 or response is None or OWN_ERROR not in response:
        return False
    return UPSTREAM not in request.app or request.app[UPSTREAM].uplink.online


async def add_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """For `on_response_prepare`: also answers a handler sends itself (image data) get one."""
    if REQUEST_ID not in response.headers and _REQUEST_ID in request:
        response.headers[REQUEST_ID] = request[_REQUEST_ID]


def _route(request: web.Request) -> str:
    """The matched route's pattern: bounded label values, whatever the paths."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return "passthrough" if canonical in ("", PASSTHROUGH_ROUTE) else canonical


def _log(
    request: web.Request,
    response: web.StreamResponse | None,
    route: str,
    status: int,
    duration: float,
) -> None:
    request_id = (response.headers.get(REQUEST_ID) if response is not None else None) or request[
        _REQUEST_ID
    ]
    sent = _bytes(response)
    source = response.headers.get("X-Edgecache-Source", "edgecache") if response else "edgecache"
    access_log.info(
        "%s %s %s %d %dB %s %.3fs",
        request_id,
        request.method,
        request.path,
        status,
        sent,
        source,
        duration,
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.path,
            "route": route,
            "status": status,
            "bytes": sent,
            "source": source,
            "duration": round(duration, 6),
        },
    )


def _bytes(response: web.StreamResponse | None) -> int:
    if response is None:
        return 0
    if BYTES_SENT in response:
        return response[BYTES_SENT]
    return response.content_length or 0
