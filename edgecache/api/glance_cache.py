"""Glance's cache management API (`/v2/cache`), answered by edgecache for its own cache.

`glance cache-list`, `cache-queue`, `cache-delete`, `cache-clear`, `cache-prune` and
`cache-clean` work against edgecache as against a Glance with its image cache on. Who may use
it is Glance's decision, asked per action with the caller's token (glance_cache_access.py):

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

In a zone of several nodes ([zone] peers) the API answers for the whole zone: every node's
images, each image queued once, removals from every node (edgecache.api.zone_cache).
"""

from __future__ import annotations

from aiohttp import web

from edgecache.answer import Answer
from edgecache.api import zone_cache
from edgecache.api.answers import to_response, visible_image
from edgecache.api.glance_cache_access import CLEAR_TARGET, DELETE, LIST, QUEUE, refusal_for
from edgecache.appkeys import AUTHORITY, CACHE, PREFETCHER, SIBLINGS
from edgecache.holdings import CLEAR_TARGETS, Removal, holdings, remove
from edgecache.holdings import clear as clear_node
from edgecache.images import is_image_id
from edgecache.refusals import refusal


async def cache_state(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, LIST)) is not None:
        return refused
    own = await holdings(request.app[CACHE], request.app[PREFETCHER])
    if SIBLINGS in request.app:
        return web.json_response(await zone_cache.zone_listing(request.app, own))
    return web.json_response(zone_cache.glance_listing({None: own}))


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
    if (
        SIBLINGS in request.app
        and not await _here(request, image_id)
        and await zone_cache.owner_elsewhere(request.app, image_id) is not None
    ):
        return web.Response(status=202)  # the zone has it, or will
    await request.app[PREFETCHER].queue(image, caller.headers)
    return web.Response(status=202)


async def delete_entry(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if (invalid := _invalid_id(request, image_id)) is not None:
        return invalid
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    outcomes = [await remove(request.app[CACHE], request.app[PREFETCHER], image_id)]
    if SIBLINGS in request.app:
        siblings = await zone_cache.remove_from_siblings(request.app, image_id)
        unreached = zone_cache.unreached([peer for peer, done in siblings.items() if done is None])
        if unreached is not None:
            return to_response(request, unreached)
        outcomes += [done for done in siblings.values() if done is not None]
    if Removal.BUSY in outcomes:
        return to_response(
            request, refusal(409, f"Image {image_id} is being read; try again later.")
        )
    if Removal.REMOVED not in outcomes:
        return to_response(request, _not_found(image_id))
    return web.Response(status=204)


async def clear(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    target = request.headers.get(CLEAR_TARGET, "").lower()
    if target not in CLEAR_TARGETS:
        return to_response(
            request,
            refusal(400, f"If provided '{CLEAR_TARGET}' must be 'cache', 'queue' or empty string."),
        )
    await clear_node(request.app[CACHE], request.app[PREFETCHER], target)
    if SIBLINGS in request.app:
        unreached = await zone_cache.clear_everywhere(request.app, target)
        if unreached is not None:
            return to_response(request, unreached)
    return web.Response(status=204)


async def prune(request: web.Request) -> web.Response:
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    files, size = await request.app[CACHE].evictor.prune()
    return web.json_response({"total_files_pruned": files, "total_bytes_pruned": size})


async def clean(request: web.Request) -> web.Response:
    """Glance removes its invalid and stalled files: here, the quarantined copies. Kept partial
    fills are not touched: they are resumed when the image is asked for again, and dropped when
    older than [cache] keep_partials, when room is needed, or when the image changed."""
    if (refused := await refusal_for(request, DELETE)) is not None:
        return refused
    await request.app[CACHE].quarantine.empty()
    return web.Response(status=200)


async def _here(request: web.Request, image_id: str) -> bool:
    """Whether this node stores, fills or has queued the image (then it is queued here)."""
    cache = request.app[CACHE]
    return (
        await cache.index.get(image_id) is not None
        or cache.filling(image_id) is not None
        or image_id in request.app[PREFETCHER].queued()
    )


def _invalid_id(request: web.Request, image_id: str) -> web.Response | None:
    return None if is_image_id(image_id) else to_response(request, _not_found(image_id))


def _not_found(image_id: str) -> Answer:
    return refusal(404, f"Image {image_id} not found.")
