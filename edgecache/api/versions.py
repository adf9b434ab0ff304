"""`GET /` and `/versions`: Glance's version document with links pointing back at edgecache."""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from edgecache.api.proxy import relay, upstream_unreachable
from edgecache.appkeys import UPSTREAM
from edgecache.headers import identity
from edgecache.upstream import TRANSIENT_ERRORS


async def versions(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    try:
        answer = await upstream.fetch(request.path_qs, identity(request.headers))
    except TRANSIENT_ERRORS:
        return upstream_unreachable()
    try:
        document = answer.json()
    except ValueError:
        return relay(answer)
    own_base = f"{request.scheme}://{request.host}"
    for version in document.get("versions", []) if isinstance(document, dict) else []:
        for link in version.get("links", []):
            if isinstance(link.get("href"), str):
                link["href"] = rewrite_href(link["href"], upstream.base_url, own_base)
    return web.json_response(document, status=answer.status)


def rewrite_href(href: str, upstream_base: str, own_base: str) -> str:
    """Point an upstream link at edgecache, dropping the upstream's path prefix if any."""
    parts = urlsplit(href)
    prefix = urlsplit(upstream_base).path.rstrip("/")
    path = parts.path[len(prefix) :] if prefix and parts.path.startswith(prefix) else parts.path
    query = f"?{parts.query}" if parts.query else ""
    return f"{own_base}{path}{query}"
