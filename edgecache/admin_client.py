"""The command line's side of the admin socket (see edgecache.api.operator)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from edgecache.api.operator import PREFIX
from edgecache.unixpath import usable_socket_path


class AdminError(Exception):
    """The daemon could not be reached on its admin socket, or refused the request."""


class AdminClient:
    def __init__(self, socket_path: Path) -> None:
        self._path = socket_path
        self._paths = ExitStack()
        connectable = self._paths.enter_context(usable_socket_path(socket_path))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=connectable),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._session.close()
        self._paths.close()

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/status"))

    async def images(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/cache"))["images"])

    async def evict(self, image_id: str) -> None:
        await self._call("DELETE", f"/cache/{image_id}")

    async def verify(self, image_id: str | None = None) -> list[dict[str, Any]]:
        path = f"/verify/{image_id}" if image_id else "/verify"
        return list((await self._call("POST", path))["verified"])

    async def clean_quarantine(self) -> dict[str, Any]:
        """Remove every quarantined copy: {"files": count, "size": bytes}."""
        return dict(await self._call("DELETE", "/quarantine"))

    async def pin(self, image_id: str) -> None:
        await self._call("PUT", f"/pin/{image_id}")

    async def _call(self, method: str, path: str) -> Any:
        try:
            async with self._session.request(method, f"http://edgecache{PREFIX}{path}") as resp:
                if resp.status >= 400:
                    raise AdminError((await resp.text()).strip() or f"HTTP {resp.status}")
                return await resp.json() if resp.status != 204 else None
        except aiohttp.ClientConnectionError as exc:
            raise AdminError(
                f"cannot reach the daemon's admin socket {self._path}: {exc.__class__.__name__}"
                " (is edgecache serve running, and may this user open the socket?)"
            ) from exc
