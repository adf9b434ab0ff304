"""`GET /` and `/versions`: Glance's version document with links pointing back at edgecache."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.appkeys import AUTHORITY, RECALL, UPSTREAM

CACHE_API_VERSIONS = ("v2.18", "v2.16", "v2.14")  # newest first, as Glance lists them


async def versions(request: web.Request) -> web.Response:
    caller = request.app[AUTHORITY].caller(request.headers)
    answer = await request.app[RECALL].get(request.path_qs, caller, needs_token=False)
    try:
        document = answer.json()
    except ValueError:
        return to_response(request, answer)
    versions = document.get("versions") if isinstance(document, dict) else None
    if not isinstance(versions, list):
        return to_response(request, answer)
    own_base = f"{own_scheme(request)}://{request.host}"
    upstream_base = request.app[UPSTREAM].base_url
    for version in versions:
        for link in version.get("links", []):
            if isinstance(link.get("href"), str):
                link["href"] = rewrite_href(link["href"], upstream_base, own_base)
    advertise_cache_api(versions)
    return to_response(request, answer, body=json.dumps(document).encode())


def own_scheme(request: web.Request) -> str:
    """https when edgecache serves TLS itself, or when the proxy in front of it that ends TLS
    (HAProxy of a multi-node zone) says so; it only shapes links sent back to this caller."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").lower()
    return forwarded if forwarded in ("http", "https") else request.scheme


def advertise_cache_api(versions: list[dict[str, Any]]) -> None:
    """List the API versions of the cache management API edgecache serves itself.

    A Glance without its own cache leaves out v2.14, v2.16 and v2.18, and python-glanceclient
    refuses every cache command unless it sees them; edgecache answers that API, so it lists
    them the way a Glance with its cache on does (v2.18 CURRENT).
    """
    present = {str(v.get("id")) for v in versions}
    template = next((v for v in versions if str(v.get("id", "")).startswith("v2")), None)
    if template is None:
        return
    added = [
        {**template, "id": version, "status": "SUPPORTED"}
        for version in CACHE_API_VERSIONS
        if version not in present
    ]
    if "v2.18" in {v["id"] for v in added}:
        for version in versions:
            if version.get("status") == "CURRENT":
                version["status"] = "SUPPORTED"
        added[0]["status"] = "CURRENT"
    versions[:0] = added


def rewrite_href(href: str, upstream_base: str, own_base: str) -> str:
    """Point an upstream link at edgecache, dropping the upstream's path prefix if any."""
    parts = urlsplit(href)
    prefix = urlsplit(upstream_base).path.rstrip("/")
    path = parts.path[len(prefix) :] if prefix and parts.path.startswith(prefix) else parts.path
    query = f"?{parts.query}" if parts.query else ""
    return f"{own_base}{path}{query}"
