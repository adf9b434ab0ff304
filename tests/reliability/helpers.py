"""Small generic helpers for the reliability suite: outcomes, metrics, on-disk state."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgecache.store.cache import ImageCache
from edgecache.store.fill import FillFailed
from tests.fakeglance import FakeGlance, _error
from tests.storekit import blob_files, index_rows, partial_files, scrape  # noqa: F401

CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_read=20)
Edge = TestClient[web.Request, web.Application]  # an in-process edgecache (make_edgecache)


def app_of(client: Edge) -> web.Application:
    """The application behind an in-process edgecache, to reach its components."""
    server = client.server
    assert isinstance(server, TestServer)
    return server.app


@dataclass(frozen=True)
class Outcome:
    """How one client's request ended, from the client's side."""

    kind: str  # exact | wrong | transfer_error | http_error | timeout (a hang)
    status: int | None = None
    body: bytes = b""
    source: str | None = None
    error: str = ""

    @property
    def acceptable(self) -> bool:
        """The exact image, or a failure the client can see: never a short or wrong success."""
        return self.kind in ("exact", "transfer_error", "http_error")


async def download(
    session: aiohttp.ClientSession,
    url: str,
    expected: bytes,
    headers: Mapping[str, str] | None = None,
    ok_statuses: Iterable[int] = (200,),
    client_timeout: aiohttp.ClientTimeout = CLIENT_TIMEOUT,
) -> Outcome:
    """GET `url` and say how it ended against the bytes it should have delivered."""
    try:
        async with session.get(url, headers=dict(headers or {}), timeout=client_timeout) as resp:
            body = await resp.read()
            source = resp.headers.get("X-Edgecache-Source")
            if resp.status not in set(ok_statuses):
                return Outcome("http_error", resp.status, body, source)
            kind = "exact" if body == expected else "wrong"
            return Outcome(kind, resp.status, body, source)
    except TimeoutError as exc:  # aiohttp's read timeouts too: the answer hung
        return Outcome("timeout", error=repr(exc))
    except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
        return Outcome("transfer_error", error=f"{type(exc).__name__}: {exc}")


def wrong_bytes(outcome: Outcome, expected: bytes) -> int:
    """How many bytes of a 'successful' body differ from what was expected (or are missing)."""
    if outcome.kind != "wrong":
        return 0
    body = outcome.body
    differing = sum(1 for a, b in zip(body, expected, strict=False) if a != b)
    return differing + abs(len(expected) - len(body))


def open_files_under(root: Path, pid: int | str = "self") -> list[str]:
    """Files under `root` that process `pid` holds open (from /proc/PID/fd)."""
    prefix = str(root.resolve())
    held: list[str] = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(prefix):
            held.append(target)
    return held


def tcp_connections(pid: int, listen_port: int) -> tuple[int, int]:
    """(connections accepted on `listen_port`, other TCP connections) the process holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    inbound = outbound = 0
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/net/{table}") as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                local_port, state, inode = (
                    int(fields[1].rsplit(":", 1)[1], 16),
                    fields[3],
                    fields[9],
                )
                if inode not in inodes or state == "0A":  # 0A: LISTEN
                    continue
                if local_port == listen_port:
                    inbound += 1
                else:
                    outbound += 1
    return inbound, outbound


def md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while piece := handle.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def tree_snapshot(root: Path, exclude: Iterable[Path] = ()) -> dict[str, tuple[int, int, str]]:
    """relative path -> (mtime_ns, size, md5 of content) for every file under `root`."""
    skipped = [p.resolve() for p in exclude]
    snapshot: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath).resolve()
        dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
        for name in filenames:
            path = here / name
            if not path.is_file():
                continue
            stat = path.stat()
            snapshot[str(path.relative_to(root.resolve()))] = (
                stat.st_mtime_ns,
                stat.st_size,
                md5_file(path),
            )
        for name in dirnames:
            relative = str((here / name).relative_to(root.resolve())) + "/"
            snapshot[relative] = ((here / name).stat().st_mtime_ns, 0, "")
    return snapshot


def files_containing(root: Path, needles: Iterable[bytes]) -> list[str]:
    """Files under `root` whose bytes contain any of `needles` (sockets and such skipped)."""
    wanted = [n for n in needles if n]
    found: list[str] = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        found.extend(f"{path}: {n!r}" for n in wanted if n in data)
    return found


async def settle(cache: ImageCache) -> None:
    """Wait for every fill in progress to be verified or abandoned (background refetches)."""
    for image_id in cache.fills.running():
        fill = cache.filling(image_id)
        if fill is not None:
            with contextlib.suppress(FillFailed):
                await fill.wait_verified()


ANSWER_WITHIN = 15  # seconds; a raw request still unanswered by then is a hang


async def exchange(port: int, request: bytes) -> tuple[int | None, bytes]:
    """Send raw bytes, read the answer until the server closes; (status or None, bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(request)
            await writer.drain()
        try:
            answer = await asyncio.wait_for(reader.read(), ANSWER_WITHIN)
        except ConnectionError:
            answer = b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return (int(match.group(1)) if match else None), answer


def request_bytes(
    method: str | bytes,
    target: str | bytes,
    headers: Sequence[tuple[str | bytes, str | bytes]],
    body: bytes = b"",
) -> bytes:
    def raw(text: str | bytes) -> bytes:
        return text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")

    lines = [raw(method) + b" " + raw(target) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [raw(name) + b": " + raw(value) for name, value in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_SIMPLE_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RobustGlance(FakeGlance):
    """FakeGlance whose own slips (a Range it cannot parse, say) become Glance-like 400s, so a
    5xx seen through edgecache is edgecache's own; it counts what it answered with a 5xx."""

    def __init__(self) -> None:
        super().__init__()
        self.slips: Counter[str] = Counter()
        self.answered_5xx = 0

    def make_app(self) -> web.Application:
        app = super().make_app()
        app.middlewares.append(self._contain)
        return app

    @web.middleware
    async def _contain(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if "Range" in request.headers:
            request = self._glance_range(request)
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException:
            raise
        except (ValueError, KeyError, UnicodeError) as exc:
            self.slips[type(exc).__name__] += 1
            return _error(400, "Bad request")
        if response.status >= 500:
            self.answered_5xx += 1
        return response

    def _glance_range(self, request: web.Request) -> web.Request:
        """FakeGlance trusts a Range's end (it would stream empty pieces forever past the
        image's end); Glance clamps it, as here. Anything else is left to its own slips."""
        image = self.images.get(request.match_info.get("id", ""))
        match = _SIMPLE_RANGE.match(request.headers["Range"])
        if image is None or match is None or not match.group(2):
            return request
        if int(match.group(2)) < len(image.data):
            return request
        self.slips["Range end past the image"] += 1
        headers = request.headers.copy()
        headers["Range"] = f"bytes={match.group(1)}-"
        return request.clone(headers=headers)


@dataclass
class Tally:
    """Outcomes counted by kind, with the first few unacceptable ones kept for the report."""

    kinds: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome, context: str) -> None:
        self.kinds[outcome.kind] += 1
        if not outcome.acceptable and len(self.problems) < 20:
            self.problems.append(
                f"{context}: {outcome.kind} status={outcome.status} len={len(outcome.body)} "
                f"source={outcome.source} {outcome.error}"
            )


async def gather_outcomes(*coroutines: Any) -> list[Outcome]:
    return list(await asyncio.gather(*coroutines))
