"""Turning Glance's answers (`recall.Answer`) into HTTP responses."""

from __future__ import annotations

from aiohttp import web

from edgecache.answer import Answer
from edgecache.appkeys import RECALL
from edgecache.authorization.identity import Caller
from edgecache.images import ImageRecord
from edgecache.refusals import not_a_record

# On a response edgecache wrote itself (not Glance's): what it told the caller.
OWN_ERROR = web.ResponseKey("own_error", str)


def to_response(request: web.Request, answer: Answer, body: bytes | None = None) -> web.Response:
    """Glance's answer as it was; a recalled one says it is from the cache and how old;
    edgecache's own refusals in the format the caller accepts, as Glance would."""
    if answer.error is not None:
        content_type, body = answer.error.render(request.headers.get("Accept"))
        response = web.Response(
            status=answer.status, body=body, content_type=content_type, charset="UTF-8"
        )
        response.headers.extend(answer.headers)
        response[OWN_ERROR] = answer.error.explanation
        return response
    response = web.Response(status=answer.status, body=answer.body if body is None else body)
    response.headers.extend(answer.headers)
    if answer.recalled:
        response.headers["X-Edgecache-Source"] = "cache"
        response.headers["Age"] = str(answer.age)
    if answer.uplink_down:
        response.headers["X-Edgecache-Uplink"] = "down"
    return response


async def visible_image(
    request: web.Request, caller: Caller, image_id: str
) -> ImageRecord | web.Response:
    """Glance's record of the image if Glance lets `caller` see it (or did, while the uplink
    is down); otherwise the answer to send instead."""
    answer = await request.app[RECALL].get(f"/v2/images/{image_id}", caller, image_id=image_id)
    if answer.status != 200:
        return to_response(request, answer)
    try:
        return answer.image()
    except ValueError:
        return to_response(request, not_a_record())
