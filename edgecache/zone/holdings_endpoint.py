"""The answering side of the zone's cache as one: this node's holdings for a sibling, and the
removals a sibling asks for once it has decided, with its caller's token, that the caller may
(edgecache.api.glance_cache). No token comes here: the zone listener answers only requests
signed with the zone's secret (edgecache.zone.endpoint), and tells nothing of access.
"""

from __future__ import annotations

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.appkeys import CACHE, PREFETCHER
from edgecache.holdings import CLEAR_TARGETS, Removal, clear, holdings, remove
from edgecache.images import is_image_id
from edgecache.refusals import refusal
from edgecache.zone.protocol import HOLDINGS_PATH

_STATUS_OF = {Removal.REMOVED: 204, Removal.ABSENT: 404, Removal.BUSY: 409}


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get(HOLDINGS_PATH, node_holdings, allow_head=False)
    router.add_delete(HOLDINGS_PATH, clear_holdings)
    router.add_delete(f"{HOLDINGS_PATH}/{{image_id}}", remove_image)


async def node_holdings(request: web.Request) -> web.Response:
    held = await holdings(request.app[CACHE], request.app[PREFETCHER])
    return web.json_response(held.to_json())


async def remove_image(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return to_response(request, refusal(404, f"Image {image_id} not found."))
    removal = await remove(request.app[CACHE], request.app[PREFETCHER], image_id)
    return web.Response(status=_STATUS_OF[removal])


async def clear_holdings(request: web.Request) -> web.Response:
    target = request.query.get("target", "")
    if target not in CLEAR_TARGETS:
        return to_response(request, refusal(400, f"Unknown clear target {target!r}."))
    await clear(request.app[CACHE], request.app[PREFETCHER], target)
    return web.Response(status=204)
