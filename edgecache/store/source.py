"""Where a fill takes an image's bytes from: the region, or (edgecache.zone) a sibling node.

Every attempt of a fill (the first and each resume) asks its `SourcePicker` for a source, so a
source that breaks mid-transfer is replaced by whichever can go on from the same offset. The
fill verifies the bytes the same way whatever their source.

Depth orders the zone's copies so that no two fills can feed each other: a stored copy is at
depth 0, a fill from the region at 1, a fill from a sibling one more than that sibling. A fill
only ever takes bytes from something shallower than itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol

import aiohttp

from edgecache.images import ImageRecord
from edgecache.upstream.client import Upstream

STORED_DEPTH = 0
REGION_DEPTH = 1
REGION = "region"
SIBLING = "sibling"


class SourceLost(Exception):
    """The source no longer has the image (a sibling dropped its copy or fill): pick again."""


class ByteSource(Protocol):
    @property
    def kind(self) -> str:
        """REGION or SIBLING: for metrics and log lines."""

    @property
    def depth(self) -> int:
        """The depth of a fill fed by this source."""

    def image_data(
        self, image_id: str, headers: Mapping[str, str], offset: int
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """The image's bytes from `offset` on (200, or 206 for a resume)."""


class SourcePicker(Protocol):
    async def pick(
        self, image: ImageRecord, shallower_than: int | None, within: float
    ) -> ByteSource:
        """A source for `image` at a depth below `shallower_than` (any if None); the region
        after waiting up to `within` seconds for the uplink if nothing else has it."""


class RegionSource:
    """The regional Glance, with the caller's credentials."""

    kind = REGION
    depth = REGION_DEPTH

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    def image_data(
        self, image_id: str, headers: Mapping[str, str], offset: int
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self.upstream.image_data(image_id, headers, offset)

    async def pick(
        self, image: ImageRecord, shallower_than: int | None, within: float
    ) -> ByteSource:
        """Itself, once the uplink is up: a short outage is ridden out, not spun on."""
        uplink = self.upstream.uplink
        if not uplink.online:
            await uplink.wait_online(within)
        return self
