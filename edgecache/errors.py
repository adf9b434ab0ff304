"""Error answers in the JSON shape Glance (webob) uses: {"message", "code", "title"}."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web


def glance_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    phrase = HTTPStatus(status).phrase
    return web.json_response(
        {"message": message, "code": f"{status} {phrase}", "title": phrase},
        status=status,
        headers=headers,
    )
