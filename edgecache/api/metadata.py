"""Metadata reads that stay available offline: image records, lists, members, schemas."""

from __future__ import annotations

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.api.proxy import passthrough
from edgecache.appkeys import AUTHORITY, RECALL
from edgecache.images import is_image_id

# Glance's answers to a member list that decide whether the caller may see the image: a 403
# ("only shared images have members") says only that the image is not shared.
MEMBER_DECISIONS = frozenset({200, 404})


async def image_record(request: web.Request) -> web.StreamResponse:
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return await passthrough(request)
    caller = request.app[AUTHORITY].caller(request.headers)
    return to_response(
        request, await request.app[RECALL].get(request.path_qs, caller, image_id=image_id)
    )


async def image_list(request: web.Request) -> web.Response:
    caller = request.app[AUTHORITY].caller(request.headers)
    return to_response(
        request,
        await request.app[RECALL].get(request.path_qs, caller, per_caller=True, with_query=True),
    )


async def image_members(request: web.Request) -> web.StreamResponse:
    """Member lists depend on who asks (an owner sees all, a member only itself)."""
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return await passthrough(request)
    caller = request.app[AUTHORITY].caller(request.headers)
    answer = await request.app[RECALL].get(
        request.path_qs, caller, per_caller=True, image_id=image_id, decisions=MEMBER_DECISIONS
    )
    return to_response(request, answer)


async def schema(request: web.Request) -> web.Response:
    caller = request.app[AUTHORITY].caller(request.headers)
    return to_response(request, await request.app[RECALL].get(request.path_qs, caller))
