"""Slowloris-style clients against a real daemon: connections that send nothing, send their
headers a byte at a time, or never finish them. Normal clients must keep being served, and
such connections must be closed after a bounded time (`[server] client_idle_timeout`), while
a slow but active download is not cut."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from tests.conftest import MiB, UpstreamServer
from tests.fakeglance import FakeGlance, FakeImage
from tests.reliability.conftest import Reporter
from tests.reliability.daemon import Daemon, Daemons
from tests.reliability.helpers import Outcome, download

KINDS = ("silent", "trickle", "unfinished")


@dataclass
class SlowClient:
    kind: str
    opened: float
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    closed_after: float | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # [watch, trickle?]

    async def watch(self) -> None:
        """Note when the server closes this connection (whatever it may have answered)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(4096):
                pass
        self.closed_after = time.monotonic() - self.opened

    async def trickle(self) -> None:
        """Headers one byte at a time, never finished."""
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /v2/images HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                self.writer.write(bytes([byte]))
                await self.writer.drain()
                await asyncio.sleep(0.2)  # the slowness is the attack, not a synchronisation


async def open_slow(url: str, kind: str) -> SlowClient:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    client = SlowClient(kind, time.monotonic(), reader, writer)
    if kind == "unfinished":
        writer.write(b"GET /v2/images HTTP/1.1\r\nHost: x\r\nX-Auth-Token: t\r\n")
    client.tasks.append(asyncio.create_task(client.watch()))  # first: see SlowClient.tasks
    if kind == "trickle":
        client.tasks.append(asyncio.create_task(client.trickle()))
    return client


async def close_all(clients: list[SlowClient]) -> None:
    for client in clients:
        for task in client.tasks:
            task.cancel()
        client.writer.transport.abort()
    await asyncio.gather(*(t for c in clients for t in c.tasks), return_exceptions=True)


async def normal_traffic(
    daemon: Daemon, images: list[FakeImage], token: str, requests: int
) -> tuple[list[Outcome], list[float]]:
    gate = asyncio.Semaphore(20)
    headers = {"X-Auth-Token": token}
    times: list[float] = []

    async def one(number: int, session: aiohttp.ClientSession) -> Outcome:
        image = images[number % len(images)]
        async with gate:
            started = time.monotonic()
            if number % 2:
                url = f"{daemon.url}/v2/images/{image.id}/file"
                outcome = await download(session, url, image.data, headers)
            else:
                async with session.get(f"{daemon.url}/v2/images/{image.id}", headers=headers) as r:
                    await r.read()
                    outcome = Outcome("exact" if r.status == 200 else "http_error", r.status)
            times.append(time.monotonic() - started)
            return outcome

    async with aiohttp.ClientSession() as session:
        outcomes = await asyncio.gather(*(one(n, session) for n in range(requests)))
    return list(outcomes), times


async def cached_images(
    glance: FakeGlance, daemon: Daemon, token: str, count: int, size: int
) -> list[FakeImage]:
    images = [glance.add_image(os.urandom(size), owner="p1") for _ in range(count)]
    async with aiohttp.ClientSession() as session:
        for image in images:
            url = f"{daemon.url}/v2/images/{image.id}/file"
            assert (await download(session, url, image.data, {"X-Auth-Token": token})).kind == (
                "exact"
            )
    return images


async def test_slow_clients_do_not_starve_normal_ones(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    figures: Reporter,
) -> None:
    """300 slow connections held open (default client_idle_timeout) while 200 normal requests
    are answered."""
    token = glance.add_project("p1")
    daemon = await daemons.start(upstream_server.url, tmp_path / "cache")
    images = await cached_images(glance, daemon, token, 2, MiB)
    slow = [await open_slow(daemon.url, KINDS[n % 3]) for n in range(300)]
    try:
        outcomes, times = await normal_traffic(daemon, images, token, 200)
        open_after = sum(client.closed_after is None for client in slow)
        fds = daemon.open_fds()
    finally:
        await close_all(slow)
    kinds = Counter(outcome.kind for outcome in outcomes)
    figures.note(
        f"300 slow connections (silent / headers a byte every 0.2 s / unfinished headers), default "
        f"client_idle_timeout: 200 normal requests {dict(kinds)}, median "
        f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; slow "
        f"connections still open afterwards {open_after}/300; daemon fds {fds}"
    )
    assert kinds == Counter(exact=200), kinds


async def test_idle_and_slow_connections_are_closed_after_client_idle_timeout(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    figures: Reporter,
) -> None:
    timeout = 1.5
    token = glance.add_project("p1")
    config = {"server": {"client_idle_timeout": timeout}}
    daemon = await daemons.start(upstream_server.url, tmp_path / "cache", config)
    big = (await cached_images(glance, daemon, token, 1, 8 * MiB))[0]
    slow = [await open_slow(daemon.url, KINDS[n % 3]) for n in range(150)]

    async def slow_download() -> tuple[bool, float]:
        """A client that reads a big image slowly, for longer than the idle timeout."""
        started = time.monotonic()
        body = bytearray()
        connector = aiohttp.TCPConnector(force_close=True)
        session_timeout = aiohttp.ClientTimeout(total=60)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=session_timeout) as session,
            session.get(
                f"{daemon.url}/v2/images/{big.id}/file",
                headers={"X-Auth-Token": token},
                read_bufsize=64 * 1024,
            ) as resp,
        ):
            while piece := await resp.content.read(256 * 1024):
                body += piece
                await asyncio.sleep(0.1)  # a slow reader: the pacing is the point
        return bytes(body) == big.data, time.monotonic() - started

    reader = asyncio.create_task(slow_download())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(client.tasks[0] for client in slow)),  # tasks[0] watches
            timeout + 10,
        )
    except TimeoutError:
        pass
    finally:
        closed = [client.closed_after for client in slow if client.closed_after is not None]
        by_kind = Counter(client.kind for client in slow if client.closed_after is not None)
        await close_all(slow)
    exact, took = await reader
    figures.note(
        f"client_idle_timeout {timeout}s: {len(closed)}/150 slow connections closed by the "
        f"server ({dict(by_kind)}), after {min(closed, default=0):.1f}-"
        f"{max(closed, default=0):.1f}s; a slow 8 MiB download over {took:.1f}s "
        f"{'completed exactly' if exact else 'FAILED'}"
    )
    assert len(closed) == 150, f"only {len(closed)} of 150 slow connections were closed"
    assert max(closed) <= timeout + 5
    assert exact, "an active (slow) download was cut by the idle timeout"
    assert took > timeout


async def test_a_connection_flood_at_the_descriptor_limit_recovers(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    figures: Reporter,
) -> None:
    """More idle connections than the daemon has file descriptors: accept() fails (EMFILE)
    until the idle ones are closed; then a normal client is served again."""
    timeout = 1.5
    token = glance.add_project("p1")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_fd_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))

    config = {"server": {"client_idle_timeout": timeout}}
    daemon = await daemons.start(
        upstream_server.url, tmp_path / "cache", config, preexec=low_fd_limit
    )
    image = (await cached_images(glance, daemon, token, 1, MiB))[0]
    flood = [await open_slow(daemon.url, "silent") for _ in range(200)]
    try:
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            outcome = await download(
                session,
                f"{daemon.url}/v2/images/{image.id}/file",
                image.data,
                {"X-Auth-Token": token},
            )
        served_after = time.monotonic() - started
    finally:
        await close_all(flood)
    alive = daemon.process.returncode is None
    figures.note(
        f"200 idle connections against LimitNOFILE=128, client_idle_timeout {timeout}s: a "
        f"normal download ended {outcome.kind} after {served_after:.1f}s; daemon alive {alive}"
    )
    assert alive
    assert outcome.kind == "exact", outcome
