"""The asking side of the zone's cache as one: every sibling's holdings, and removals from
every sibling, asked at once over their zone listeners (signed as for image bytes; a caller's
token never goes to a sibling). A sibling that does not answer is None in the results, and one
WARNING line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlencode

import aiohttp

from edgecache.holdings import Holdings, Removal
from edgecache.zone.protocol import HOLDINGS_PATH
from edgecache.zone.siblings import Siblings

log = logging.getLogger(__name__)

T = TypeVar("T")
_REMOVAL_OF = {204: Removal.REMOVED, 404: Removal.ABSENT, 409: Removal.BUSY}


class SiblingHoldings:
    def __init__(self, siblings: Siblings) -> None:
        self._siblings = siblings

    async def listed(self) -> dict[str, Holdings | None]:
        """Each sibling's holdings."""
        return await self._everywhere("list its cached images", self._listed)

    async def remove(self, image_id: str) -> dict[str, Removal | None]:
        """Dequeue the image and remove its copy on every sibling."""
        return await self._everywhere(
            f"remove image {image_id}", lambda peer: self._remove(peer, image_id)
        )

    async def clear(self, target: str) -> dict[str, bool | None]:
        """Glance's cache-clear (target "", "cache" or "queue") on every sibling."""
        path = HOLDINGS_PATH + (f"?{urlencode({'target': target})}" if target else "")
        return await self._everywhere("clear its cache", lambda peer: self._cleared(peer, path))

    async def _everywhere(
        self, what: str, ask: Callable[[str], Awaitable[T]]
    ) -> dict[str, T | None]:
        peers = self._siblings.peers
        answers = await asyncio.gather(*(ask(peer) for peer in peers), return_exceptions=True)
        results: dict[str, T | None] = {}
        for peer, answer in zip(peers, answers, strict=True):
            if isinstance(answer, aiohttp.ClientError | TimeoutError | ValueError):
                log.warning(
                    "Sibling %s was asked to %s for the zone and did not answer (%s); the "
                    "answer to the client leaves that node out. Check that it runs and is "
                    "reachable from this one.",
                    peer,
                    what,
                    str(answer) or type(answer).__name__,
                )
                results[peer] = None
            elif isinstance(answer, BaseException):
                raise answer
            else:
                results[peer] = answer
        return results

    async def _listed(self, peer: str) -> Holdings:
        async with self._siblings.request("GET", peer, HOLDINGS_PATH) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            return Holdings.from_json(await response.json())

    async def _remove(self, peer: str, image_id: str) -> Removal:
        path = f"{HOLDINGS_PATH}/{image_id}"
        async with self._siblings.request("DELETE", peer, path) as response:
            if response.status not in _REMOVAL_OF:
                raise ValueError(f"HTTP {response.status}")
            return _REMOVAL_OF[response.status]

    async def _cleared(self, peer: str, path: str) -> bool:
        async with self._siblings.request("DELETE", peer, path) as response:
            if response.status != 204:
                raise ValueError(f"HTTP {response.status}")
            return True
