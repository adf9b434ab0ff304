"""The answering side: a sibling's bytes of an image from this node's stored copy or fill.

Never from the region: a sibling asks here before going there itself. The endpoint is its own
application on its own listener (`[zone] listen`), which the zone's front door never forwards
to; only requests signed with the zone's secret are answered (edgecache.zone.signing). The
secret, rather than a list of peer addresses, because behind HAProxy, NAT or a container
network the address a request comes from says little, and it works the same over the zone's
TLS.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from edgecache.api.answers import to_response
from edgecache.appkeys import CACHE, METRICS, PREFETCHER, SETTINGS, SIBLINGS, ZONE_SIGNATURES
from edgecache.config import Settings
from edgecache.images import is_image_id
from edgecache.observe import OWN_ERRORS_LOG, add_request_id, observe_requests
from edgecache.ranges import ByteRange, MultipleRanges, RangeNotSatisfiable, parse_range
from edgecache.refusals import range_not_available, refusal
from edgecache.store.fill import Fill
from edgecache.store.index import BlobEntry
from edgecache.store.source import STORED_DEPTH
from edgecache.transfer.send import ImageBytesResponse, LocalBytes
from edgecache.upstream.lowdelay import mark_low_delay
from edgecache.zone import holdings_endpoint
from edgecache.zone.protocol import (
    ASKER_HEADER,
    COPY_HEADER,
    DEPTH_HEADER,
    EXPECT_HEADER,
    FILLING,
    STORED,
    ZONE_PREFIX,
    version_of,
    version_of_record,
)
from edgecache.zone.signing import SignatureCheck

log = logging.getLogger(__name__)

ROUTE = f"{ZONE_PREFIX}/{{image_id}}/file"


def create_zone_app(main: web.Application) -> web.Application:
    """The sibling endpoint's application, with the main application's components: the main
    runner must be set up (its components built) before this is called."""
    settings = main[SETTINGS]
    assert settings.zone_secret is not None, "config.py requires [zone] secret with peers"
    app = web.Application(middlewares=[observe_requests, signed_only])
    app[SETTINGS] = settings
    assert settings.zone_self is not None, "config.py requires [zone] self with peers"
    app[ZONE_SIGNATURES] = SignatureCheck(settings.zone_secret, settings.zone_self)
    app[METRICS] = main[METRICS]
    app[OWN_ERRORS_LOG] = main[OWN_ERRORS_LOG]
    app[CACHE] = main[CACHE]
    if SIBLINGS in main:
        app[SIBLINGS] = main[SIBLINGS]
    app[PREFETCHER] = main[PREFETCHER]
    app.on_response_prepare.append(add_request_id)
    app.router.add_route("GET", ROUTE, sibling_file)
    app.router.add_route("HEAD", ROUTE, sibling_file)
    holdings_endpoint.add_routes(app.router)
    return app


@web.middleware
async def signed_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Whatever the path, only requests signed by a node of the zone (and not replayed)."""
    refused = request.app[ZONE_SIGNATURES].refusal(
        request.method, request.raw_path, request.headers
    )
    if refused is not None:
        return to_response(request, refusal(refused.status, refused.explanation))
    return await handler(request)


async def sibling_file(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    image_id = request.match_info["image_id"]
    if not is_image_id(image_id):
        return _not_here(request, image_id)
    cache = request.app[CACHE]
    expected = request.headers.get(EXPECT_HEADER)
    fill = cache.filling(image_id)
    if fill is not None and expected in (None, version_of_record(fill.image)):
        if fill.depth is None and _asker_waits_for_me(request, settings):
            await fill.wait_source_chosen()
        elif fill.depth is None and SIBLINGS in request.app:
            request.app[SIBLINGS].turned_away(image_id, request.headers.get(ASKER_HEADER, ""))
        if fill.depth is not None and fill.error is None:
            return await _serve_fill(request, fill, fill.depth)
    entry = await cache.index.get(image_id)
    if entry is not None and expected in (
        None,
        version_of(entry.size, entry.hash_value, entry.checksum),
    ):
        response = await _serve_stored(request, entry)
        if response is not None:
            return response
    return _not_here(request, image_id)


def _asker_waits_for_me(request: web.Request, settings: Settings) -> bool:
    """Whether the asker should hear where this node's starting fill takes its bytes from.

    Two nodes that start a fill of the same image at the same moment would each find the other
    without a source yet, and both go to the region. So a node answers a node after it in
    `[zone] peers` only once it has chosen (at most one look-up later), and a node before it
    at once: that one then goes to the region itself, and this one, remembering it turned it
    away, asks it again and takes the image from it (siblings.ZoneSources).
    """
    peers, asker = settings.zone_peers, request.headers.get(ASKER_HEADER, "")
    assert settings.zone_self is not None
    return asker in peers and peers.index(asker) > peers.index(settings.zone_self)


def _not_here(request: web.Request, image_id: str) -> web.Response:
    return to_response(
        request, refusal(404, f"This node has no copy of image {image_id} and is not filling it.")
    )


def _wanted(request: web.Request, size: int) -> ByteRange | web.Response:
    try:
        byte_range = parse_range(request.headers.get("Range"), size)
    except (MultipleRanges, RangeNotSatisfiable):
        return to_response(request, range_not_available(size))
    return byte_range or ByteRange(0, size)


def _headers(size: int, wanted: ByteRange, copy: str, depth: int) -> tuple[int, dict[str, str]]:
    whole = wanted.start == 0 and wanted.end == size
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(wanted.length),
        COPY_HEADER: copy,
        DEPTH_HEADER: str(depth),
    }
    if not whole:
        headers["Content-Range"] = wanted.content_range(size)
    return (200 if whole else 206), headers


async def _send(
    request: web.Request, headers: tuple[int, dict[str, str]], local: LocalBytes
) -> web.StreamResponse:
    """A sibling's bytes go first on this node's link: its fill feeds all its clients."""
    status, fields = headers
    response = ImageBytesResponse(
        status=status,
        headers=fields,
        receiver="a sibling",
        counted=request.app[METRICS].sibling_bytes_served.inc,
    )
    if request.transport is not None:
        mark_low_delay(request.transport.get_extra_info("socket"))
    await response.send(request, local)
    return response


async def _serve_fill(request: web.Request, fill: Fill, depth: int) -> web.StreamResponse:
    """The fill's bytes as they land; the last one only once the fill is verified.

    The sibling counts as a caller waiting for the fill (edgecache.store.priority): it cannot
    say whether a caller waits for its own fill, and a boot must never wait for a prefetch."""
    wanted = _wanted(request, fill.size)
    if isinstance(wanted, web.Response):
        return wanted
    headers = _headers(fill.size, wanted, FILLING, depth)
    if request.method == "HEAD":
        return web.StreamResponse(status=headers[0], headers=headers[1])
    waiting = request.app[CACHE].priority.caller_waits(fill.image.id)
    with fill.open_reader() as partial, waiting:
        local = LocalBytes(fill.image.id, partial, fill.spans(wanted), stored=False)
        return await _send(request, headers, local)


async def _serve_stored(request: web.Request, entry: BlobEntry) -> web.StreamResponse | None:
    """The stored copy, each chunk re-hashed as for any reader; None if it is gone or its
    first chunk is corrupt."""
    cache = request.app[CACHE]
    wanted = _wanted(request, entry.size)
    if isinstance(wanted, web.Response):
        return wanted
    headers = _headers(entry.size, wanted, STORED, STORED_DEPTH)
    if request.method == "HEAD":
        return web.StreamResponse(status=headers[0], headers=headers[1])
    if_corrupt = "a sibling asked for it and will look elsewhere"
    async with cache.verified_copy(entry, wanted, if_corrupt=if_corrupt) as copy:
        if copy is None:
            return None
        local = LocalBytes(entry.image_id, copy.file, copy.spans(), stored=True)
        return await _send(request, headers, local)
