"""`GET`/`HEAD /v2/images/{id}/file`: decide, then source, then send.

Glance decides whether the caller may have the bytes (edgecache.authorization.decision);
then the bytes come from the stored copy, a fill, or the region (edgecache.transfer.source),
and go out through one response type (edgecache.transfer.send) or the region's relay.
"""

from __future__ import annotations

from aiohttp import web

from edgecache.api.answers import to_response
from edgecache.api.proxy import passthrough
from edgecache.appkeys import AUTHORITY, CACHE, DOWNLOADS, METRICS, SOURCES, UPSTREAM
from edgecache.authorization.decision import Refused
from edgecache.authorization.identity import Caller
from edgecache.images import ImageRecord, is_image_id
from edgecache.ranges import ByteRange, MultipleRanges, RangeNotSatisfiable, parse_range
from edgecache.refusals import MULTIPLE_RANGES, range_not_available, refusal
from edgecache.transfer.relay import relay_verified
from edgecache.transfer.send import (
    BYTES_SENT,
    ImageBytesResponse,
    LocalBytes,
    data_response,
    image_data_headers,
)
from edgecache.transfer.source import CACHE as FROM_CACHE
from edgecache.transfer.source import FILL, FromRegion, Source
from edgecache.transfer.source import UPSTREAM as FROM_UPSTREAM


async def image_file(request: web.Request) -> web.StreamResponse:
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return await passthrough(request)
    caller = request.app[AUTHORITY].caller(request.headers)
    decision = await request.app[DOWNLOADS].decide(caller, image_id)
    if isinstance(decision, Refused):
        return to_response(request, decision.answer)
    image = decision.image
    if not image.cacheable or "Content-Range" in request.headers:
        # Glance's legacy Content-Range-on-GET is left to Glance.
        return await passthrough(request)
    assert image.size is not None
    try:
        byte_range = parse_range(request.headers.get("Range"), image.size)
    except MultipleRanges:
        return to_response(request, refusal(400, MULTIPLE_RANGES))
    except RangeNotSatisfiable as unsatisfiable:
        return to_response(request, range_not_available(image.size, unsatisfiable.reason))
    if request.method == "HEAD":
        return data_response(image, byte_range, "metadata")
    async with request.app[SOURCES].open(image, byte_range, caller.headers) as source:
        return await _send(request, image, byte_range, caller, source)


async def _send(
    request: web.Request,
    image: ImageRecord,
    byte_range: ByteRange | None,
    caller: Caller,
    source: Source,
) -> web.StreamResponse:
    metrics = request.app[METRICS]
    if isinstance(source, LocalBytes):
        kind = FROM_CACHE if source.stored else FILL
        status, headers = image_data_headers(image, byte_range, kind)
        response = ImageBytesResponse(
            status=status,
            headers=headers,
            receiver="a client",
            counted=metrics.bytes_served.labels(kind).inc,
        )
        with metrics.transfers_in_progress.labels(kind).track_inprogress():
            await response.send(request, source)
        return response
    if isinstance(source, FromRegion):
        with metrics.transfers_in_progress.labels(FROM_UPSTREAM).track_inprogress():
            relayed = (
                await relay_verified(
                    request,
                    upstream=request.app[UPSTREAM],
                    image=image,
                    caller=caller.headers,
                    with_md5=request.app[CACHE].settings.verify_md5,
                    metrics=metrics,
                )
                if source.verified
                else await passthrough(request)
            )
        if not isinstance(relayed, web.StreamResponse):
            return to_response(request, relayed)
        metrics.bytes_served.labels(FROM_UPSTREAM).inc(relayed.get(BYTES_SENT, 0))
        return relayed
    return to_response(request, source)
