"""The client for the regional Glance: one pooled session, timeouts, failover, uplink state.

The upstream may be one glance-api or several (a primary and fallbacks, in order of
preference), or another edgecache (tiers). Requests go to the active endpoint; when it fails to
answer, requests that can safely be repeated (GET/HEAD without a body) are retried on the next
endpoint, which becomes active. While a fallback is active the primary is probed and taken
back as soon as it answers. The uplink is down only when no endpoint answers.

Connections come from two bounded pools (edgecache.upstream.pools): image data, and everything else.
Requests carry exactly the headers their caller gives: aiohttp adds none of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from edgecache.config import Settings
from edgecache.headers import OWN_USER_AGENT
from edgecache.metrics import Metrics
from edgecache.tls import ClientTls, client_context, warn_if_unverified
from edgecache.upstream.failures import FailureDescriber, FailureExplainer
from edgecache.upstream.lowdelay import low_delay_socket
from edgecache.upstream.pools import DATA_POOL, METADATA_POOL, ConnectionPool, PoolExhausted
from edgecache.upstream.uplink import Uplink, UplinkDown

log = logging.getLogger(__name__)

# Errors after which the same request may succeed later (the link, not the answer).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    aiohttp.ClientResponseError,  # an answer that cannot be parsed: a broken link or proxy
    TimeoutError,
    UplinkDown,
)
# Answers that mean something between us and Glance (or Glance itself) is not serving.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
# A probe that cannot get a connection has not shown that the upstream answers.
_REPEATABLE_METHODS = frozenset({"GET", "HEAD"})
# Pieces this large keep per-piece overhead low on fast links; what is buffered when a stream
# breaks is lost (aiohttp drops it), so it is not larger.
_READ_BUFFER = 1 << 20
# Headers aiohttp would add to a request that lacks them; a proxy forwards what it was sent.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
# Paths whose requests and answers are image bytes: the image file and the staging area.
_DATA_SUFFIXES = ("/file", "/stage")


def build_connector(limit: int, ssl_context: ssl.SSLContext) -> aiohttp.TCPConnector:
    """A connector to the upstream that opens at most `limit` connections at once, with the
    [upstream] TLS settings (tls.py)."""
    return aiohttp.TCPConnector(
        limit=limit, ttl_dns_cache=60, ssl=ssl_context, socket_factory=low_delay_socket
    )


def pool_for(path_qs: str) -> str:
    """The pool a request for `path_qs` takes its connection from."""
    return DATA_POOL if path_qs.split("?")[0].endswith(_DATA_SUFFIXES) else METADATA_POOL


@dataclass(frozen=True)
class UpstreamAnswer:
    """A small, fully read upstream response (metadata, errors)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Upstream:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.endpoints = settings.upstream_urls
        self._active = 0
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=settings.connect_timeout)
        self._probe_interval = settings.probe_interval
        self._settings = settings
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._pools = {
            DATA_POOL: ConnectionPool(
                DATA_POOL, settings.data_connections, settings.pool_wait, metrics
            ),
            METADATA_POOL: ConnectionPool(
                METADATA_POOL, settings.metadata_connections, settings.pool_wait, metrics
            ),
        }
        self._metrics = metrics
        self._tls = ClientTls.upstream(settings)
        self._ssl_context = client_context(self._tls)
        self._failures = FailureExplainer(
            FailureDescriber.of(self._tls, self._ssl_context, settings.connect_timeout), metrics
        )
        self._on_fallback = asyncio.Event()
        self._failback: asyncio.Task[None] | None = None
        self.uplink = Uplink(
            probe=self._probe_all,
            metrics=metrics,
            failures_to_offline=settings.failures_to_offline,
            probe_interval=settings.probe_interval,
        )
        self._publish_active()

    async def start(self) -> None:
        warn_if_unverified(self._tls, self.endpoints)
        self._sessions = {
            name: aiohttp.ClientSession(
                timeout=self._timeout,
                auto_decompress=False,
                read_bufsize=_READ_BUFFER,
                connector=build_connector(pool.limit, self._ssl_context),
            )
            for name, pool in self._pools.items()
        }
        self.uplink.start()
        if len(self.endpoints) > 1:
            self._failback = asyncio.create_task(self._back_to_primary(), name="upstream-failback")

    async def close(self) -> None:
        await self.uplink.close()
        if self._failback is not None:
            self._failback.cancel()
            await asyncio.gather(self._failback, return_exceptions=True)
        for session in self._sessions.values():
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The session of the metadata pool, for short requests of edgecache's own."""
        return self._session(METADATA_POOL)

    def _session(self, pool: str) -> aiohttp.ClientSession:
        if not self._sessions:
            raise RuntimeError("Upstream.start() was not awaited")
        return self._sessions[pool]

    @property
    def base_url(self) -> str:
        """The endpoint requests go to now."""
        return self.endpoints[self._active]

    def request(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        data: Any = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A streaming request, on a connection of the pool its path belongs to (pool_for)."""
        return self._request(pool_for(path_qs), method, path_qs, headers, data)

    @asynccontextmanager
    async def _request(
        self,
        pool: str,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        data: Any = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Raises UplinkDown at once while the uplink is known down, and PoolExhausted if no
        connection of `pool` comes free in time.

        Only getting an answer counts for the uplink's state: a break while the body streams
        shows on the next request (a resume, say).
        """
        self.uplink.check()
        async with (
            self._pools[pool].slot(),
            self._answer(pool, method, path_qs, headers, data) as response,
        ):
            yield response

    @asynccontextmanager
    async def _answer(
        self, pool: str, method: str, path_qs: str, headers: Mapping[str, str], data: Any
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        repeatable = method in _REPEATABLE_METHODS and data is None
        candidates = self._candidates() if repeatable else [self._active]
        failure = ""
        for number, index in enumerate(candidates):
            more_to_try = number + 1 < len(candidates)
            started = time.monotonic()
            try:
                response = await self._session(pool).request(
                    method,
                    self.endpoints[index] + path_qs,
                    headers=headers,
                    data=data,
                    allow_redirects=False,
                    skip_auto_headers=_NO_AUTO_HEADERS,
                )
            except TRANSIENT_ERRORS as exc:
                failure = (await self._failures.explain(self.endpoints[index], exc)).sentence
                self._give_up_on(index)
                if more_to_try:
                    continue
                self.uplink.record_failure(failure)
                raise
            finally:
                self._metrics.upstream_duration.labels(method).observe(time.monotonic() - started)
            if response.status in UNAVAILABLE_STATUSES:
                failure = self._failures.unavailable(
                    self.endpoints[index], response.status
                ).sentence
                self._give_up_on(index)
                if more_to_try:
                    response.release()
                    continue
                self.uplink.record_failure(failure)
            else:
                self._use(index)
                self._failures.answered(self.endpoints[index])
                self.uplink.record_success()
            try:
                yield response
            finally:
                response.release()
            return

    async def fetch(self, path_qs: str, headers: Mapping[str, str]) -> UpstreamAnswer:
        """GET a small document and read it whole, on a metadata connection: also the one-byte
        GET of an image's data that asks Glance's download decision, so that fills can never
        hold up an authorization."""
        async with self._request(METADATA_POOL, "GET", path_qs, headers) as response:
            body = await response.read()
            return UpstreamAnswer(response.status, response.headers, body)

    def image_data(
        self, image_id: str, headers: Mapping[str, str], offset: int = 0
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """Stream an image's bytes from `offset` on."""
        wanted = dict(headers)
        if offset:
            wanted["Range"] = f"bytes={offset}-"
        return self.request("GET", f"/v2/images/{image_id}/file", wanted)

    def _candidates(self) -> list[int]:
        """The active endpoint, then the others in order of preference."""
        return [self._active, *(i for i in range(len(self.endpoints)) if i != self._active)]

    def _give_up_on(self, index: int) -> None:
        if index == self._active and len(self.endpoints) > 1:
            self._use((index + 1) % len(self.endpoints))

    def _use(self, index: int) -> None:
        if index == self._active:
            return
        log.warning("upstream: switching from %s to %s", self.base_url, self.endpoints[index])
        self._active = index
        if index == 0:
            self._on_fallback.clear()
        else:
            self._on_fallback.set()
        self._publish_active()

    def _publish_active(self) -> None:
        for index, endpoint in enumerate(self.endpoints):
            self._metrics.upstream_active.labels(endpoint).set(int(index == self._active))

    async def _answers(self, index: int) -> bool:
        endpoint = self.endpoints[index]
        try:
            async with (
                self._pools[METADATA_POOL].slot(),
                self.session.get(
                    endpoint + "/versions",
                    headers={"User-Agent": OWN_USER_AGENT},
                    skip_auto_headers=_NO_AUTO_HEADERS,
                    timeout=self._probe_timeout,
                ) as response,
            ):
                if response.status in UNAVAILABLE_STATUSES:
                    failure = self._failures.unavailable(endpoint, response.status)
                    self.uplink.note_probe_failure(failure.sentence)
                    return False
        except TRANSIENT_ERRORS as exc:
            self.uplink.note_probe_failure((await self._failures.explain(endpoint, exc)).sentence)
            return False
        except PoolExhausted:
            return False
        self._failures.answered(endpoint)
        return True

    async def _probe_all(self) -> bool:
        """For the uplink while it is down: is any endpoint answering? (It becomes active.)"""
        for index in range(len(self.endpoints)):
            if await self._answers(index):
                self._use(index)
                return True
        return False

    async def _back_to_primary(self) -> None:
        while True:
            await self._on_fallback.wait()
            await asyncio.sleep(self._probe_interval)  # the probe's period, not a synchronisation
            if self._active != 0 and await self._answers(0):
                self._use(0)
