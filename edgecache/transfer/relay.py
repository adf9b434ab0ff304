"""A whole image relayed from the region that will not be kept (larger than the cache, no room
on disk), with the same promise as a fill: its last piece goes out only once size and
checksums match Glance's record, else the transfer is aborted."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from aiohttp import web

from edgecache.answer import Answer
from edgecache.headers import forwardable
from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.refusals import uplink_down
from edgecache.store.digests import ImageDigest
from edgecache.transfer.send import BYTES_SENT, abort, data_response
from edgecache.upstream.client import TRANSIENT_ERRORS, Upstream

log = logging.getLogger(__name__)


async def relay_verified(
    request: web.Request,
    *,
    upstream: Upstream,
    image: ImageRecord,
    caller: Mapping[str, str],
    with_md5: bool,
    metrics: Metrics,
) -> web.StreamResponse | Answer:
    """The response, sent; or the refusal to send if the region could not be reached."""
    digest = ImageDigest(image, with_md5)
    loop = asyncio.get_running_loop()
    response = data_response(image, None, "upstream")
    try:
        async with upstream.image_data(image.id, caller) as answer:
            if answer.status != 200:
                body = await answer.read()
                return web.Response(
                    status=answer.status, body=body, headers=forwardable(answer.headers)
                )
            await response.prepare(request)
            response[BYTES_SENT] = 0
            received, held = 0, b""
            async for piece in answer.content.iter_any():
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
            return uplink_down(f"the data of image {image.id}")
        abort(request)
        return response
    problem = digest.mismatch() if received == image.size else f"received {received} bytes"
    if problem is not None:
        log.warning("relayed image %s failed verification: %s; aborting", image.id, problem)
        metrics.verification_failures.inc()
        abort(request)
        return response
    await response.write(held)
    response[BYTES_SENT] += len(held)
    await response.write_eof()
    return response
