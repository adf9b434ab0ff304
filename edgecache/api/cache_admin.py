"""Glance's cache management API (`/v2/cache`), answered by edgecache for its own cache.

`glance cache-list`, `cache-queue`, `cache-delete` and `cache-clear` work against edgecache
as against a Glance with its image cache on. Who may use it is Glance's decision: the caller's
token is tried on Glance's own `GET /v2/cache`, which enforces the cache policies before it
looks at whether Glance itself caches (403 = not allowed; 200, or 404 "not supported at this
site" = allowed). The decision is remembered like any other, for use while the uplink is down.
"""

from __future__ import annotations

from aiohttp import web

from edgecache.api.answers import to_response, visible_image
from edgecache.appkeys import AUTHORITY, CACHE, PREFETCHER, RECALL, UPSTREAM
from edgecache.authorization.recall import Answer, refusal
from edgecache.images import is_image_id
from edgecache.store.db import best_effort
from edgecache.upstream import TRANSIENT_ERRORS

CACHE_API = "cache-api"  # the pseudo image id under which the decision is remembered
CLEAR_TARGET = "x-image-cache-clear-target"


async def _refused(request: web.Request) -> web.Response | None:
    """None if the caller may manage the cache, else the refusal to send."""
    authority = request.app[AUTHORITY]
    caller = authority.caller(request.headers)
    try:
        answer = await request.app[UPSTREAM].fetch("/v2/cache", caller.headers)
    except TRANSIENT_ERRORS:
        status = await authority.offline_decision(caller, CACHE_API)
    else:
        status = 200 if answer.status in (200, 404) else answer.status
        with best_effort("Glance's decision"):
            await authority.observe(caller, status, [CACHE_API])
    if status == 200:
        return None
    if status == 401:
        return to_response(request, request.app[RECALL].unauthorized())
    return to_response(
        request, refusal(403, "You are not authorized to manage this site's image cache.")
    )


async def cache_state(request: web.Request) -> web.Response:
    if (refused := await _refused(request)) is not None:
        return refused
    cache = request.app[CACHE]
    cached = [
        {
            "image_id": entry.image_id,
            "hits": entry.hits,
            "last_accessed": entry.last_access if entry.hits else 0,
            "last_modified": entry.created_at,
            "size": entry.size,
        }
        for entry in await cache.index.all()
    ]
    queued = request.app[PREFETCHER].queued() + cache.fills.running()
    return web.json_response({"cached_images": cached, "queued_images": queued})


async def queue_image(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if (refused := await _refused(request) or _invalid_id(request, image_id)) is not None:
        return refused
    caller = request.app[AUTHORITY].caller(request.headers)
    image = await visible_image(request, caller, image_id)
    if isinstance(image, web.Response):
        return image
    if image.status != "active":
        return to_response(
            request, refusal(400, "Only images with status active can be targeted for queueing")
        )
    if not image.cacheable:
        return to_response(
            request, refusal(400, f"Image {image_id} has no checksum to verify a copy by.")
        )
    request.app[PREFETCHER].queue(image, caller.headers)
    return web.Response(status=202)


async def delete_entry(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if (refused := await _refused(request) or _invalid_id(request, image_id)) is not None:
        return refused
    cache = request.app[CACHE]
    dequeued = request.app[PREFETCHER].discard(image_id)
    if await cache.index.get(image_id) is not None:
        if not await cache.evictor.remove(image_id):
            return to_response(
                request, refusal(409, f"Image {image_id} is being read; try again later.")
            )
    elif not dequeued:
        return to_response(request, _not_found(image_id))
    return web.Response(status=204)


async def clear(request: web.Request) -> web.Response:
    if (refused := await _refused(request)) is not None:
        return refused
    target = request.headers.get(CLEAR_TARGET, "").lower()
    if target not in ("", "cache", "queue"):
        return to_response(
            request,
            refusal(400, f"If provided '{CLEAR_TARGET}' must be 'cache', 'queue' or empty string."),
        )
    if target in ("", "queue"):
        request.app[PREFETCHER].clear()
    if target in ("", "cache"):
        cache = request.app[CACHE]
        for entry in await cache.index.all():
            await cache.evictor.remove(entry.image_id)  # copies being read stay
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    if (refused := await _refused(request)) is not None:
        return refused
    files, size = await request.app[CACHE].evictor.prune()
    return web.json_response({"total_files_pruned": files, "total_bytes_pruned": size})


async def clean(request: web.Request) -> web.Response:
    """Nothing stalls here: partial fills are discarded when they fail or at start-up."""
    if (refused := await _refused(request)) is not None:
        return refused
    return web.Response(status=200)


def _invalid_id(request: web.Request, image_id: str) -> web.Response | None:
    return None if is_image_id(image_id) else to_response(request, _not_found(image_id))


def _not_found(image_id: str) -> Answer:
    return refusal(404, f"Image {image_id} not found.")
