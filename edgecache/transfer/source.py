"""Where a request's image bytes come from, once the caller may have them: the stored copy
(each chunk re-checked), the fill in progress (whose bytes come from the region or from a
sibling of the zone), a fill started now, or the region itself.

What the caller gets from the region directly: a part (Range) of an image not cached is
Glance's answer as it is, while a fill goes on in the background; a whole image that cannot be
kept now (larger than the cache, no room) is relayed with the same check as a fill. While the
uplink is down, an image neither stored nor filling (and that no sibling has) gets 503.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass

from edgecache.answer import Answer
from edgecache.database.connection import best_effort
from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.ranges import ByteRange
from edgecache.refusals import uplink_down
from edgecache.store.cache import ImageCache
from edgecache.transfer.send import LocalBytes
from edgecache.upstream.uplink import Uplink
from edgecache.zone.siblings import Siblings

CACHE = "cache"  # X-Edgecache-Source of bytes from a stored copy
FILL = "fill"  # ... of bytes from a fill in progress
UPSTREAM = "upstream"  # ... of bytes from the region


@dataclass(frozen=True)
class FromRegion:
    """Glance's own bytes: the whole image relayed with a fill's check (`verified`), or
    Glance's answer as it is (a part of an image not cached)."""

    verified: bool


Source = LocalBytes | FromRegion | Answer  # an Answer: the refusal to send instead


class Sources:
    def __init__(
        self,
        *,
        cache: ImageCache,
        uplink: Uplink,
        siblings: Siblings | None,
        metrics: Metrics,
    ) -> None:
        self._cache = cache
        self._uplink = uplink
        self._siblings = siblings
        self._metrics = metrics

    @asynccontextmanager
    async def open(
        self, image: ImageRecord, byte_range: ByteRange | None, caller: Mapping[str, str]
    ) -> AsyncIterator[Source]:
        """The source of the bytes of `byte_range` (None: all) of `image`, open while the
        block runs; `caller`: the headers a fill started now asks the region with.

        A caller of the whole image waits for its fill, if one runs or starts: the fill takes
        the region's bytes as a boot meanwhile (edgecache.store.priority). A part is sent from
        the region directly, so its caller waits for no fill."""
        whole = byte_range is None
        with self._cache.priority.caller_waits(image.id) if whole else nullcontext():
            async with self._open(image, byte_range, caller) as source:
                yield source

    @asynccontextmanager
    async def _open(
        self, image: ImageRecord, byte_range: ByteRange | None, caller: Mapping[str, str]
    ) -> AsyncIterator[Source]:
        cache, requests = self._cache, self._metrics.data_requests
        fill = cache.filling(image.id)
        if fill is None:
            entry = await cache.lookup(image)
            if entry is not None:
                wanted = byte_range or ByteRange(0, entry.size)
                async with cache.verified_copy(
                    entry, wanted, if_corrupt="fetching it again"
                ) as copy:
                    if copy is not None:
                        with best_effort("a hit"):
                            await cache.record_hit(entry.image_id)
                        requests.labels("hit").inc()
                        yield LocalBytes(image.id, copy.file, copy.spans(), stored=True)
                        return
            if not self._uplink.online and not await self._a_sibling_has(image):
                requests.labels("unavailable").inc()
                yield uplink_down(f"the data of image {image.id}")
                return
            fill = await cache.fill(image, caller)
        if fill is None or byte_range is not None:
            requests.labels("passthrough").inc()
            yield FromRegion(verified=byte_range is None)
            return
        requests.labels("miss").inc()
        with fill.open_reader() as partial:
            yield LocalBytes(image.id, partial, fill.spans(ByteRange(0, fill.size)), stored=False)

    async def _a_sibling_has(self, image: ImageRecord) -> bool:
        """Whether a sibling node of the zone can be the source of a fill while the uplink is
        down."""
        return self._siblings is not None and bool(await self._siblings.offers(image))
