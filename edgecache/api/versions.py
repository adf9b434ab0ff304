"""`GET /` and `/versions`: Glance's version document with links pointing back at edgecache."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.appkeys import AUTHORITY, RECALL, UPSTREAM


async def versions(request: web.Request) -> web.Response:
    caller = request.app[AUTHORITY].caller(request.headers)
    answer = await request.app[RECALL].get(request.path_qs, caller, needs_token=False)
    try:
        document = answer.json()
    except ValueError:
        return to_response(answer)
    own_base = f"{request.scheme}://{request.host}"
    upstream_base = request.app[UPSTREAM].base_url
    for version in document.get("versions", []) if isinstance(document, dict) else []:
        for link in version.get("links", []):
            if isinstance(link.get("href"), str):
                link["href"] = rewrite_href(link["href"], upstream_base, own_base)
    return to_response(answer, body=json.dumps(document).encode())


def rewrite_href(href: str, upstream_base: str, own_base: str) -> str:
    """Point an upstream link at edgecache, dropping the upstream's path prefix if any."""
    parts = urlsplit(href)
    prefix = urlsplit(upstream_base).path.rstrip("/")
    path = parts.path[len(prefix) :] if prefix and parts.path.startswith(prefix) else parts.path
    query = f"?{parts.query}" if parts.query else ""
    return f"{own_base}{path}{query}"
