"""`GET`/`HEAD /v2/images/{id}/file`: authorize with Glance, then hit, fill or pass through."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from edgecache.api.answers import downloadable_image, to_response
from edgecache.api.proxy import BYTES_SENT, passthrough
from edgecache.api.transfer import FileEndedEarly, abort, corked, data_response, send_file
from edgecache.appkeys import AUTHORITY, CACHE, METRICS, SIBLINGS, UPSTREAM
from edgecache.authorization.identity import Caller
from edgecache.authorization.recall import refusal, uplink_down
from edgecache.database.connection import best_effort
from edgecache.headers import forwardable
from edgecache.images import ImageRecord, is_image_id
from edgecache.ranges import ByteRange, MultipleRanges, RangeNotSatisfiable, parse_range
from edgecache.store.blobs import BlobCorrupt
from edgecache.store.digests import ImageDigest
from edgecache.store.fill import Fill, FillFailed
from edgecache.store.index import BlobEntry
from edgecache.upstream.client import TRANSIENT_ERRORS

log = logging.getLogger(__name__)

MULTIPLE_RANGES = (
    "Requests with multiple ranges are not supported in Glance. "
    "You may make multiple single-range requests instead."
)


async def image_file(request: web.Request) -> web.StreamResponse:
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return await passthrough(request)
    caller = request.app[AUTHORITY].caller(request.headers)
    # Glance decides who may have the bytes: its get_image and download_image decisions.
    image = await downloadable_image(request, caller, image_id)
    if isinstance(image, web.Response):
        return image
    if not image.cacheable or "Content-Range" in request.headers:
        # Glance's legacy Content-Range-on-GET is left to Glance.
        return await passthrough(request)
    assert image.size is not None
    try:
        byte_range = parse_range(request.headers.get("Range"), image.size)
    except MultipleRanges:
        return to_response(request, refusal(400, MULTIPLE_RANGES))
    except RangeNotSatisfiable as unsatisfiable:
        return to_response(
            request,
            refusal(
                416,
                "The Range requested is not available.",
                {"Content-Range": f"bytes */{image.size}"},  # RFC 9110 asks for it
                detail=unsatisfiable.reason,
            ),
        )
    if request.method == "HEAD":
        return data_response(image, byte_range, "metadata")
    return await _serve(request, image, byte_range, caller)


async def _serve(
    request: web.Request,
    image: ImageRecord,
    byte_range: ByteRange | None,
    caller: Caller,
) -> web.StreamResponse:
    cache = request.app[CACHE]
    metrics = request.app[METRICS]
    fill = cache.filling(image.id)
    if fill is None:
        entry = await cache.lookup(image)
        if entry is not None:
            response = await _serve_blob(request, image, entry, byte_range)
            if response is not None:
                metrics.data_requests.labels("hit").inc()
                return response
        if not request.app[UPSTREAM].uplink.online and not await _a_sibling_has(request, image):
            metrics.data_requests.labels("unavailable").inc()
            return to_response(request, uplink_down(f"the data of image {image.id}"))
        fill = await cache.fill(image, caller.headers)
    if fill is None or byte_range is not None:
        # A whole image that cannot be kept now (too big for max_size, no room) is relayed
        # with the same check as a fill; a part of an image not yet cached is Glance's answer
        # as it is, while any fill goes on in the background.
        metrics.data_requests.labels("passthrough").inc()
        relay = (
            _relay_verified(request, image, caller) if byte_range is None else passthrough(request)
        )
        with metrics.transfers_in_progress.labels("upstream").track_inprogress():
            response = await relay
        metrics.bytes_served.labels("upstream").inc(response.get(BYTES_SENT, 0))
        return response
    metrics.data_requests.labels("miss").inc()
    return await _serve_fill(request, image, fill)


async def _a_sibling_has(request: web.Request, image: ImageRecord) -> bool:
    """Whether a sibling node of the zone can be the source of a fill while the uplink is down."""
    return SIBLINGS in request.app and bool(await request.app[SIBLINGS].offers(image))


async def _relay_verified(
    request: web.Request, image: ImageRecord, caller: Caller
) -> web.StreamResponse:
    """Relay a whole image from Glance that will not be kept, with the same promise as a
    fill: the last piece goes out only once size and checksums match, else the transfer
    is aborted."""
    digest = ImageDigest(image, request.app[CACHE].settings.verify_md5)
    loop = asyncio.get_running_loop()
    response = data_response(image, None, "upstream")
    try:
        async with request.app[UPSTREAM].image_data(image.id, caller.headers) as upstream:
            if upstream.status != 200:
                body = await upstream.read()
                return web.Response(
                    status=upstream.status, body=body, headers=forwardable(upstream.headers)
                )
            await response.prepare(request)
            response[BYTES_SENT] = 0
            received, held = 0, b""
            async for piece in upstream.content.iter_any():
                await asyncio.gather(
                    *(loop.run_in_executor(None, update, piece) for update in digest.updaters())
                )
                received += len(piece)
                if held:
                    await response.write(held)
                    response[BYTES_SENT] += len(held)
                held = piece
    except TRANSIENT_ERRORS:
        if not response.prepared:
            return to_response(request, uplink_down(f"the data of image {image.id}"))
        abort(request)
        return response
    problem = digest.mismatch() if received == image.size else f"received {received} bytes"
    if problem is not None:
        log.warning("relayed image %s failed verification: %s; aborting", image.id, problem)
        request.app[METRICS].verification_failures.inc()
        abort(request)
        return response
    await response.write(held)
    response[BYTES_SENT] += len(held)
    await response.write_eof()
    return response


async def _serve_blob(
    request: web.Request,
    image: ImageRecord,
    entry: BlobEntry,
    byte_range: ByteRange | None,
) -> web.StreamResponse | None:
    """Answer from the stored copy; None if it vanished or its first chunk is corrupt."""
    cache = request.app[CACHE]
    wanted = byte_range or ByteRange(0, entry.size)
    async with cache.verified_copy(entry, wanted, if_corrupt="fetching it again") as copy:
        if copy is None:
            return None
        with best_effort("a hit"):
            await cache.record_hit(entry.image_id)
        response = data_response(image, byte_range, "cache")
        with _counting(request, response, "cache"), corked(request):
            await response.prepare(request)
            try:
                span = copy.first
                while span is not None:
                    await send_file(request, response, copy.file, span.start, span.length)
                    response[BYTES_SENT] += span.length
                    span = await anext(copy.rest, None)
            except (BlobCorrupt, FileEndedEarly) as exc:
                log.error("image %s: %s; transfer aborted", image.id, exc)
                abort(request)
                return response
            except ConnectionError as exc:
                return _client_left(request, response, image, exc)
        await response.write_eof()
        return response


async def _serve_fill(request: web.Request, image: ImageRecord, fill: Fill) -> web.StreamResponse:
    """Stream the image while it is being fetched, ending only once it is verified."""
    response = data_response(image, None, "fill")
    with fill.open_reader() as partial, _counting(request, response, "fill"):
        await response.prepare(request)
        try:
            while response[BYTES_SENT] < fill.size:
                sent = response[BYTES_SENT]
                end = await fill.readable_end(sent)
                await send_file(request, response, partial, sent, end - sent)
                response[BYTES_SENT] = end
            await fill.wait_verified()
        except (FillFailed, FileEndedEarly) as exc:
            log.warning("aborting transfer of %s: %s", image.id, exc)
            abort(request)
            return response
        except ConnectionError as exc:
            return _client_left(request, response, image, exc)
    await response.write_eof()
    return response


def _client_left(
    request: web.Request, response: web.StreamResponse, image: ImageRecord, exc: OSError
) -> web.StreamResponse:
    """A caller that hangs up mid-transfer is routine (a cancelled boot): one line, no trace."""
    log.info(
        "client went away after %d bytes of image %s (%s)",
        response[BYTES_SENT],
        image.id,
        exc.strerror or type(exc).__name__,
    )
    abort(request)
    return response


@contextmanager
def _counting(request: web.Request, response: web.StreamResponse, source: str) -> Iterator[None]:
    """Track a transfer in the gauges, and count its bytes however it ends."""
    metrics = request.app[METRICS]
    response[BYTES_SENT] = 0
    try:
        with metrics.transfers_in_progress.labels(source).track_inprogress():
            yield
    finally:
        metrics.bytes_served.labels(source).inc(response[BYTES_SENT])
