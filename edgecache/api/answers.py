"""Turning a `recall.Answer` into an HTTP response."""

from __future__ import annotations

from aiohttp import web

from edgecache.recall import Answer


def to_response(answer: Answer, body: bytes | None = None) -> web.Response:
    """Glance's answer as it was; a recalled one says it is from the cache and how old."""
    response = web.Response(status=answer.status, body=answer.body if body is None else body)
    response.headers.extend(answer.headers)
    if answer.recalled:
        response.headers["X-Edgecache-Source"] = "cache"
        response.headers["X-Edgecache-Uplink"] = "down"
        response.headers["Age"] = str(answer.age)
    return response
