"""The client for the regional Glance: one pooled session, timeouts, and the calls we make."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from edgecache.config import Settings

# Errors after which the same request may succeed if repeated (the link, not the answer).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
    TimeoutError,
)
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
    def __init__(self, settings: Settings) -> None:
        self.base_url = settings.upstream_url
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.connect_timeout,
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            auto_decompress=False,
            read_bufsize=_READ_BUFFER,
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=60),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        return self._session

    def url(self, path_qs: str) -> str:
        return self.base_url + path_qs

    def request(
        self,
        method: str,
        path_qs: str,
        headers: Mapping[str, str],
        data: Any = None,
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """A streaming request; use as `async with`. Redirects are the caller's to see."""
        return self.session.request(
            method, self.url(path_qs), headers=headers, data=data, allow_redirects=False
        )

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
