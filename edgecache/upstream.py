"""The client for the regional Glance: one pooled session, timeouts, uplink observation."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from edgecache.config import Settings
from edgecache.metrics import Metrics
from edgecache.uplink import Uplink, UplinkDown

# Errors after which the same request may succeed later (the link, not the answer).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
    UplinkDown,
)
# Answers that mean something between us and Glance (or Glance itself) is not serving.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})
# Pieces this large keep per-piece overhead low on fast links; what is buffered when a stream
# breaks is lost (aiohttp drops it), so it is not larger.
_READ_BUFFER = 1 << 20


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
        self.base_url = settings.upstream_url
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._probe_timeout = aiohttp.ClientTimeout(total=settings.connect_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._metrics = metrics
        self.uplink = Uplink(
            probe=self._probe,
            metrics=metrics,
            failures_to_offline=settings.failures_to_offline,
            probe_interval=settings.probe_interval,
        )

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            read_bufsize=_READ_BUFFER,
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        )
        self.uplink.start()

    async def close(self) -> None:
        await self.uplink.close()
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        return self._session

    def url(self, path_qs: str) -> str:
        return self.base_url + path_qs

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        data: Any = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming request. Raises UplinkDown at once while the uplink is known down.

        Only getting an answer counts for the uplink's state: a break while the body streams
        shows on the next request (a resume, say).
        """
        self.uplink.check()
        started = time.monotonic()
        try:
            response = await self.session.request(
                method, self.url(path_qs), headers=headers, data=data, allow_redirects=False
            )
        except TRANSIENT_ERRORS as exc:
            self.uplink.record_failure(f"{method} {path_qs.split('?')[0]}: {exc!r}")
            raise
        finally:
            self._metrics.upstream_duration.labels(method).observe(time.monotonic() - started)
        if response.status in UNAVAILABLE_STATUSES:
            self.uplink.record_failure(f"{method} {path_qs.split('?')[0]}: {response.status}")
        else:
            self.uplink.record_success()
        try:
            yield response
        finally:
            response.release()

    async def fetch(self, path_qs: str, headers: Mapping[str, str]) -> UpstreamAnswer:
        """GET a small document and read it whole."""
        async with self.request("GET", path_qs, headers) as response:
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

    async def _probe(self) -> bool:
        try:
            async with self.session.get(
                self.url("/versions"), timeout=self._probe_timeout
            ) as response:
                return response.status not in UNAVAILABLE_STATUSES
        except TRANSIENT_ERRORS:
            return False
