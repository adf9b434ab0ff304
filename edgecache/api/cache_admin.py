"""Glance's cache management API (`/v2/cache`), answered by edgecache for its own cache.

`glance cache-list`, `cache-queue`, `cache-delete`, `cache-clear`, `cache-prune` and
`cache-clean` work against edgecache as against a Glance with its image cache on. Who may use
it is Glance's decision, asked per action with the caller's token (cache_access.py):

- list (`GET /v2/cache`): Glance's `cache_list`, asked as `GET /v2/cache`;
- queue (`PUT /v2/cache/{id}`): the image must be visible to the caller, active and carry a
  checksum, and Glance's `cache_image` with the image as target is asked as the same
  `PUT /v2/cache/{id}`: Glance's exact decision. A regional Glance that runs its own image
  cache therefore queues the image there too: it is the caller's own request;
- delete one image, clear, prune, clean: Glance's `cache_delete`, asked as `DELETE /v2/cache`
  with an `x-image-cache-clear-target` Glance refuses (400) after its policy check and before
  it deletes anything, so asking has no side effect at the region. The per-image delete is
  therefore decided without the image as policy target (Glance's own per-image delete would
  name it), and prune and clean by `cache_delete` rather than Glance's `cache_prune` and
  `cache_clean`, which cannot be asked without pruning or cleaning the region's cache;
- a Glance without the cache API (404) decides nothing: only callers Keystone says have the
  `admin` role (with `[keystone]`) are allowed then.

Decisions are remembered per action for use while the uplink is down.
"""

from __future__ import annotations

from aiohttp import web

from edgecache.answer import Answer
from edgecache.api.answers import to_response, visible_image
from edgecache.api.cache_access import CLEAR_TARGET, DELETE, LIST, QUEUE, refusal_for
from edgecache.appkeys import AUTHORITY, CACHE, PREFETCHER
from edgecache.images import is_image_id
from edgecache.refusals import refusal


async def cache_state(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, LIST)) is not None:
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
    queued = request.app[PREFETCHER].queued()
    queued += [image_id for image_id in cache.fills.running() if image_id not in queued]
    return web.json_response({"cached_images": cached, "queued_images": queued})


async def queue_image(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if (invalid := _invalid_id(request, image_id)) is not None:
        return invalid
    caller = request.app[AUTHORITY].caller(request.headers)
    image = await visible_image(request, caller, image_id)
    if isinstance(image, web.Response):
        return image
    if (refused := await refusal_for(request, QUEUE, image_id)) is not None:
        return refused
    if image.status != "active":
        return to_response(
            request, refusal(400, "Only images with status active can be targeted for queueing")
        )
    if not image.cacheable:
        return to_response(
            request, refusal(400, f"Image {image_id} has no checksum to verify a copy by.")
        )
    await request.app[PREFETCHER].queue(image, caller.headers)
    return web.Response(status=202)


async def delete_entry(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if (invalid := _invalid_id(request, image_id)) is not None:
        return invalid
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    cache = request.app[CACHE]
    dequeued = await request.app[PREFETCHER].discard(image_id)
    if await cache.index.get(image_id) is not None:
        if not await cache.evictor.remove(image_id):
            return to_response(
                request, refusal(409, f"Image {image_id} is being read; try again later.")
            )
    elif not dequeued:
        return to_response(request, _not_found(image_id))
    return web.Response(status=204)


async def clear(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    target = request.headers.get(CLEAR_TARGET, "").lower()
    if target not in ("", "cache", "queue"):
        return to_response(
            request,
            refusal(400, f"If provided '{CLEAR_TARGET}' must be 'cache', 'queue' or empty string."),
        )
    if target in ("", "queue"):
        await request.app[PREFETCHER].clear()
    if target in ("", "cache"):
        cache = request.app[CACHE]
        for entry in await cache.index.all():
            await cache.evictor.remove(entry.image_id)  # copies being read stay
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    files, size = await request.app[CACHE].evictor.prune()
    return web.json_response({"total_files_pruned": files, "total_bytes_pruned": size})


async def clean(request: web.Request) -> web.Response:
    """Glance removes its invalid and stalled files: here, the quarantined copies (partial
    fills are discarded when they fail, or at start-up)."""
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    await request.app[CACHE].quarantine.empty()
    return web.Response(status=200)


def _invalid_id(request: web.Request, image_id: str) -> web.Response | None:
    return None if is_image_id(image_id) else to_response(request, _not_found(image_id))


def _not_found(image_id: str) -> Answer:
    return refusal(404, f"Image {image_id} not found.")
