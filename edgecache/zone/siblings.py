"""The asking side: which sibling has an image, and its bytes as the source of a fill."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import aiohttp

from edgecache.config import Settings
from edgecache.headers import OWN_USER_AGENT
from edgecache.images import ImageRecord
from edgecache.metrics import Metrics
from edgecache.store.source import SIBLING, ByteSource, RegionSource, SourceLost
from edgecache.tls import ClientTls, client_context
from edgecache.upstream.failures import Failure, FailureDescriber
from edgecache.upstream.lowdelay import low_delay_socket
from edgecache.zone.protocol import (
    ASKER_HEADER,
    COPY_HEADER,
    DEPTH_HEADER,
    EXPECT_HEADER,
    STORED,
    image_path,
    version_of_record,
)
from edgecache.zone.signing import sign

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Offer:
    """A sibling that has an image (a stored copy, or a fill under way) at `depth`."""

    peer: str
    depth: int
    copy: str


class Siblings:
    """The zone's other nodes, asked over their sibling endpoint (edgecache.zone.endpoint)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        assert settings.zone_self is not None, "config.py requires [zone] self with peers"
        assert settings.zone_secret is not None, "config.py requires [zone] secret with peers"
        self.peers = settings.siblings
        self._secret = settings.zone_secret
        self._headers = {ASKER_HEADER: settings.zone_self, "User-Agent": OWN_USER_AGENT}
        wait = settings.zone_lookup_timeout
        # A sibling still choosing its own source answers a look-up once it has chosen, which
        # takes at most its own look-up: hence twice the time for the whole answer.
        self._lookup_timeout = aiohttp.ClientTimeout(total=2 * wait, connect=wait)
        self._data_timeout = aiohttp.ClientTimeout(
            total=None, connect=wait, sock_connect=wait, sock_read=settings.read_timeout
        )
        self._metrics = metrics
        tls = ClientTls.zone(settings)
        self._ssl_context = client_context(tls)  # used for the peers named by https URLs
        self._has_client_certificate = tls.client_cert is not None
        self._tls_failures = FailureDescriber.of(tls, self._ssl_context, wait)
        self._reported: dict[str, Failure] = {}  # peer -> its TLS failure, logged once
        self._session: aiohttp.ClientSession | None = None
        # image id -> siblings before this node in peers that asked for the image while this
        # node was still choosing a source, and so heard that it has none (endpoint.py).
        self._turned_away: dict[str, set[str]] = {}

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            connector=aiohttp.TCPConnector(socket_factory=low_delay_socket, ssl=self._ssl_context),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Siblings.start() was not awaited")
        return self._session

    def turned_away(self, image_id: str, peer: str) -> None:
        self._turned_away.setdefault(image_id, set()).add(peer)

    def take_turned_away(self, image_id: str) -> set[str]:
        return self._turned_away.pop(image_id, set())

    async def offers(
        self,
        image: ImageRecord,
        shallower_than: int | None = None,
        among: Collection[str] | None = None,
    ) -> list[Offer]:
        """The siblings (of `among`, if given) that have this version of the image below depth
        `shallower_than`, in order of preference; all are asked at once.

        Stored copies first. Then fills, the deepest (the most recently started) first: in a
        storm the nodes then copy the image along a chain, each link carrying one copy besides
        its own clients, instead of every node copying it from the owner, whose link would
        carry a copy per sibling on top of its share of the clients.
        """
        peers = [peer for peer in self.peers if among is None or peer in among]
        answers = await asyncio.gather(*(self._ask(peer, image) for peer in peers))
        usable = [
            offer
            for offer in answers
            if offer is not None and (shallower_than is None or offer.depth < shallower_than)
        ]
        return sorted(usable, key=lambda offer: (offer.copy != STORED, -offer.depth))

    async def _ask(self, peer: str, image: ImageRecord) -> Offer | None:
        path = image_path(image.id)
        try:
            async with self.session.head(
                peer + path,
                headers=self._signed(
                    "HEAD", peer + path, {EXPECT_HEADER: version_of_record(image)}
                ),
                timeout=self._lookup_timeout,
                allow_redirects=False,
            ) as response:
                self._reported.pop(peer, None)
                if response.status == 404:
                    self._metrics.sibling_lookups.labels("miss").inc()
                    return None
                if response.status != 200:
                    self._refused(peer, response.status)
                    return None
                offer = Offer(
                    peer, int(response.headers[DEPTH_HEADER]), response.headers[COPY_HEADER]
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._metrics.sibling_lookups.labels("error").inc()
            await self._warn(peer, image, exc)
            return None
        except (KeyError, ValueError):
            self._refused(peer, 200)
            return None
        self._metrics.sibling_lookups.labels(offer.copy).inc()
        return offer

    async def _warn(self, peer: str, image: ImageRecord, exc: BaseException) -> None:
        """One WARNING per look-up that failed, but a TLS failure only once per peer and cause
        until the peer answers again (it fails every look-up the same way)."""
        if peer.startswith("https:"):
            known = self._reported.get(peer)
            failure = await self._tls_failures.describe(peer, exc, known)
            if failure.is_tls:
                if failure != known:
                    self._reported[peer] = failure
                    log.warning(
                        "Sibling %s cannot be asked for images over TLS: %s%s. This node takes "
                        "images from its other siblings or the region until this is fixed.",
                        peer,
                        failure.sentence,
                        self._certificate_advice(failure),
                    )
                return
        log.warning(
            "Sibling %s did not say whether it has image %s (%s); going on without it. "
            "Check that the node runs and is reachable from this one.",
            peer,
            image.id,
            _reason(exc),
        )

    def _certificate_advice(self, failure: Failure) -> str:
        if failure.reason == "tls_client_certificate" and self._has_client_certificate:
            return "; zone.client_cert must be issued by the CA in the sibling's zone.ca_file"
        return ""

    def _signed(self, method: str, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        """This node's headers and `headers`, signed for `url` (edgecache.zone.signing)."""
        request_headers = {**self._headers, **headers}
        return {**request_headers, **sign(self._secret, method, url, request_headers)}

    def _refused(self, peer: str, status: int) -> None:
        self._metrics.sibling_lookups.labels("error").inc()
        advice = (
            "make [zone] secret the same on every node of the zone, and keep the nodes' "
            "clocks synchronized (NTP)"
            if status in (401, 403)
            else "check that [zone] peers names edgecache nodes of this version"
        )
        log.warning(
            "Sibling %s answered a look-up with HTTP %d, not an edgecache zone answer; %s.",
            peer,
            status,
            advice,
        )

    def request(
        self, method: str, peer: str, path: str
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A signed request for `path` on `peer`'s zone listener (its holdings, a removal)."""
        url = peer + path
        return self.session.request(
            method,
            url,
            headers=self._signed(method, url, {}),
            timeout=self._data_timeout,
            allow_redirects=False,
        )

    @asynccontextmanager
    async def image_data(
        self, peer: str, image_id: str, offset: int
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The sibling's bytes of the image from `offset` on; SourceLost if it has none now."""
        path = image_path(image_id)
        async with self.session.get(
            peer + path,
            headers=self._signed(
                "GET", peer + path, {"Range": f"bytes={offset}-"} if offset else {}
            ),
            timeout=self._data_timeout,
            allow_redirects=False,
        ) as response:
            if response.status not in (200, 206):
                raise SourceLost(f"sibling {peer} answered {response.status} for image {image_id}")
            yield response


@dataclass(frozen=True)
class SiblingSource:
    siblings: Siblings
    offer: Offer

    @property
    def kind(self) -> str:
        return SIBLING

    @property
    def depth(self) -> int:
        return self.offer.depth + 1

    def image_data(
        self, image_id: str, headers: Mapping[str, str], offset: int
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        # The caller's credentials stay here: a sibling is a source of bytes, not a judge.
        return self.siblings.image_data(self.offer.peer, image_id, offset)


class ZoneSources:
    """The fill's source picker in a zone: a sibling that has the image, else the region."""

    def __init__(self, siblings: Siblings, region: RegionSource) -> None:
        self._siblings = siblings
        self._region = region

    async def pick(
        self, image: ImageRecord, shallower_than: int | None, within: float
    ) -> ByteSource:
        offers = await self._siblings.offers(image, shallower_than)
        # A sibling before this node in peers that asked meanwhile heard "not here", and goes to
        # the region itself: take the image from it rather than over the WAN a second time.
        while not offers and (turned_away := self._siblings.take_turned_away(image.id)):
            offers = await self._siblings.offers(image, shallower_than, among=turned_away)
        self._siblings.take_turned_away(image.id)
        if not offers:
            return await self._region.pick(image, shallower_than, within)
        log.info(
            "taking image %s from sibling %s (%s copy)", image.id, offers[0].peer, offers[0].copy
        )
        return SiblingSource(self._siblings, offers[0])


def _reason(exc: BaseException) -> str:
    """A failure in words, for a log line."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "cannot connect"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "it closed the connection"
    return "the connection broke"
