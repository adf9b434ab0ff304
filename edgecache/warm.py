"""`edgecache warm`: fill a running daemon's cache ahead of need.

It goes through the daemon's own data path with the caller's token, so Glance decides what
may be warmed and the daemon does the fetching, verifying and storing (one process owns the
cache). An image the daemon already has answers with `X-Edgecache-Source: cache`: the transfer
is dropped at once instead of re-read.

With `--queue` (or `--wait`) the images are first handed to the daemon's prefetch queue, as
`glance cache-queue` does (Glance's `cache_image` policy decides), so the daemon fetches them
whether or not this command is still running, across its own restarts and in its `[prefetch]
window`; `--wait` then follows each through the data path, which joins the daemon's fill.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import aiohttp

from edgecache.authorization.bootdocs import BOOT_DOCUMENTS
from edgecache.authorization.keystone import Keystone
from edgecache.config import ServiceCredentials
from edgecache.images import is_image_id

_PIECE = 1 << 20


class WarmError(Exception):
    """The warm run cannot start (credentials, selection); says what to fix."""


@dataclass
class Target:
    id: str
    name: str | None
    size: int | None


@dataclass
class Outcome:
    target: Target
    result: str = "pending"  # cached, already cached, queued, failed
    detail: str = ""
    received: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def failed(self) -> bool:
        return self.result == "failed"

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.received / self.elapsed if self.elapsed > 0 else 0.0


class Progress(Protocol):
    """What the warm run reports as it goes; see edgecache.progress for the displays."""

    def started(self, outcome: Outcome) -> None: ...

    def advanced(self, outcome: Outcome) -> None: ...

    def finished(self, outcome: Outcome) -> None: ...


async def token_from(
    explicit: str | None, env: Mapping[str, str], session: aiohttp.ClientSession
) -> str:
    """--token, else OS_AUTH_TOKEN, else Keystone v3 password auth from the OS_* variables."""
    if explicit:
        return explicit
    if env.get("OS_AUTH_TOKEN"):
        return env["OS_AUTH_TOKEN"]
    needed = ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME")
    missing = [name for name in needed if not env.get(name)]
    if missing:
        raise WarmError(
            "no credentials: pass --token, set OS_AUTH_TOKEN, or set the OS_* password "
            f"variables (missing: {', '.join(missing)})"
        )
    auth_url = env["OS_AUTH_URL"].rstrip("/")
    credentials = ServiceCredentials(
        auth_url=auth_url if auth_url.endswith("/v3") else f"{auth_url}/v3",
        username=env["OS_USERNAME"],
        password=env["OS_PASSWORD"],
        project_name=env["OS_PROJECT_NAME"],
        user_domain_name=env.get("OS_USER_DOMAIN_NAME", "Default"),
        project_domain_name=env.get("OS_PROJECT_DOMAIN_NAME", "Default"),
    )
    try:
        return await Keystone(credentials, session).token()
    except (PermissionError, aiohttp.ClientError, KeyError) as exc:
        raise WarmError(f"Keystone password authentication failed: {exc}") from exc


class Warmer:
    def __init__(self, session: aiohttp.ClientSession, endpoint: str, token: str) -> None:
        self._session = session
        self._endpoint = endpoint.rstrip("/")
        self._headers = {"X-Auth-Token": token}

    async def select(
        self,
        images: Sequence[str],
        *,
        all_public: bool = False,
        tags: Sequence[str] = (),
        from_file: Path | None = None,
    ) -> list[Target]:
        """The images named (ids or names), listed in a file, public, or carrying a tag."""
        wanted = list(images)
        if from_file is not None:
            wanted += _names_in(from_file)
        targets: dict[str, Target] = {}
        for ref in wanted:
            target = await self._one(ref)
            targets.setdefault(target.id, target)
        if all_public:
            for target in await self._listing("visibility=public"):
                targets.setdefault(target.id, target)
        for tag in tags:
            for target in await self._listing(f"tag={quote(tag)}"):
                targets.setdefault(target.id, target)
        return list(targets.values())

    async def queue(self, targets: Sequence[Target]) -> list[Outcome]:
        """Hand each image to the daemon's prefetch queue (`PUT /v2/cache/{id}`)."""
        await self._boot_documents()
        outcomes = []
        for target in targets:
            outcome = Outcome(target)
            url = f"{self._endpoint}/v2/cache/{target.id}"
            try:
                async with self._session.put(url, headers=self._headers) as response:
                    if response.status == 202:
                        outcome.result = "queued"
                    else:
                        outcome.result = "failed"
                        outcome.detail = (
                            f"HTTP {response.status}: {_message(await response.text())}"
                        )
            except aiohttp.ClientConnectionError as exc:
                raise WarmError(f"cannot reach edgecache at {self._endpoint}: {exc}") from exc
            outcome.finished = time.monotonic()
            outcomes.append(outcome)
        return outcomes

    async def warm(
        self, targets: Sequence[Target], parallel: int, progress: Progress
    ) -> list[Outcome]:
        await self._boot_documents()
        limit = asyncio.Semaphore(parallel)

        async def bounded(target: Target) -> Outcome:
            async with limit:
                return await self._warm_one(target, progress)

        return list(await asyncio.gather(*(bounded(target) for target in targets)))

    async def _boot_documents(self) -> None:
        """Read what clients read before a boot (versions, schemas) through the daemon, so it
        holds them with the images: a boot after only a warm then works while offline."""
        for path in BOOT_DOCUMENTS:
            await self._get_json(path, accept=(200, 300))

    async def _warm_one(self, target: Target, progress: Progress) -> Outcome:
        outcome = Outcome(target)
        progress.started(outcome)
        try:
            await self._fetch(outcome, progress)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome.result, outcome.detail = "failed", f"transfer broke: {exc.__class__.__name__}"
        outcome.finished = time.monotonic()
        progress.finished(outcome)
        return outcome

    async def _fetch(self, outcome: Outcome, progress: Progress) -> None:
        url = f"{self._endpoint}/v2/images/{outcome.target.id}/file"
        async with self._session.get(url, headers=self._headers) as response:
            if response.status != 200:
                outcome.result = "failed"
                outcome.detail = f"HTTP {response.status}: {_message(await response.text())}"
                return
            source = response.headers.get("X-Edgecache-Source")
            if source == "cache":
                outcome.result = "already cached"
                return
            if source != "fill":
                outcome.result = "failed"
                outcome.detail = "not cacheable here (larger than the cache, or no checksum)"
                return
            async for piece in response.content.iter_chunked(_PIECE):
                outcome.received += len(piece)
                progress.advanced(outcome)
        # aiohttp raised if the body ended short; the daemon only ends it once verified.
        outcome.result = "cached"

    async def _one(self, ref: str) -> Target:
        if is_image_id(ref):
            record = await self._get_json(f"/v2/images/{ref}")
            return _target(record)
        matches = await self._listing(f"name={quote(ref)}")
        if len(matches) != 1:
            found = "no image" if not matches else f"{len(matches)} images"
            raise WarmError(f"{found} named {ref!r} visible to these credentials; use its id")
        return matches[0]

    async def _listing(self, query: str) -> list[Target]:
        targets, path = [], f"/v2/images?{query}&limit=100"
        while path:
            page = await self._get_json(path)
            targets += [_target(record) for record in page.get("images", [])]
            path = page.get("next") or ""
        return targets

    async def _get_json(self, path: str, accept: tuple[int, ...] = (200,)) -> Any:
        try:
            async with self._session.get(self._endpoint + path, headers=self._headers) as response:
                if response.status not in accept:
                    raise WarmError(
                        f"GET {path}: HTTP {response.status}: {_message(await response.text())}"
                    )
                return await response.json()
        except aiohttp.ClientConnectionError as exc:
            raise WarmError(f"cannot reach edgecache at {self._endpoint}: {exc}") from exc


def _target(record: dict[str, Any]) -> Target:
    size = record.get("size")
    return Target(str(record["id"]), record.get("name"), size if isinstance(size, int) else None)


def _names_in(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise WarmError(f"cannot read {path}: {exc.strerror}") from exc
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def _message(body: str) -> str:
    """Glance's JSON error message if there is one, else the start of the body."""
    try:
        return str(json.loads(body).get("message", body))[:200]
    except (ValueError, AttributeError):
        return body.strip()[:200]
