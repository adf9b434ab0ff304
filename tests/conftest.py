"""Fixtures as factories: a fake Glance, and edgecache instances in front of it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from edgecache.app import create_app
from edgecache.appkeys import UPSTREAM
from edgecache.config import Settings
from tests.fakeglance import FakeGlance

MiB = 1 << 20


@pytest.fixture
def glance() -> FakeGlance:
    return FakeGlance()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UpstreamServer:
    """The fake Glance on a fixed loopback port, which tests can stop and start again."""

    def __init__(self, glance: FakeGlance) -> None:
        self._glance = glance
        self._runner: web.AppRunner | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self._glance.make_app(), shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def go_offline(client: TestClient, upstream: UpstreamServer) -> None:
    await upstream.stop()
    uplink = client.server.app[UPSTREAM].uplink
    while uplink.online:  # requests that fail are what tell edgecache the uplink is gone
        async with client.get("/versions"):
            pass


async def go_online(client: TestClient, upstream: UpstreamServer) -> None:
    await upstream.start()
    assert await client.server.app[UPSTREAM].uplink.wait_online(within=30)


@pytest.fixture
async def upstream_server(glance: FakeGlance) -> AsyncIterator[UpstreamServer]:
    server = UpstreamServer(glance)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def glance_url(upstream_server: UpstreamServer) -> str:
    return upstream_server.url


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_settings(glance_url: str, cache_dir: Path) -> Callable[..., Settings]:
    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "upstream": glance_url,
            "cache_dir": cache_dir,
            "chunk_size": 256 * 1024,
            "max_size": 64 * MiB,
            "stall_timeout": 5.0,
            "read_timeout": 5.0,
        }
        values.update(overrides)
        return Settings(**values)

    return factory


EdgecacheFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
async def make_edgecache(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[EdgecacheFactory]:
    """Start edgecache instances (same cache dir unless told otherwise); all closed at the end."""
    clients: list[TestClient] = []

    async def factory(**overrides: Any) -> TestClient:
        client = TestClient(TestServer(create_app(make_settings(**overrides)), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.close()


@pytest.fixture
async def edgecache(make_edgecache: EdgecacheFactory) -> TestClient:
    return await make_edgecache()


def random_bytes(size: int) -> bytes:
    return os.urandom(size)


Daemon = tuple[asyncio.subprocess.Process, str]


async def wait_until_serving(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.returncode is not None:
                raise RuntimeError(f"edgecache exited with {process.returncode}")
            try:
                async with session.get(f"{url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # polling a port that is not open yet
    raise TimeoutError("edgecache did not start")


SpawnEdgecache = Callable[..., Awaitable[Daemon]]


@pytest.fixture
async def spawn_edgecache() -> AsyncIterator[SpawnEdgecache]:
    """Start real `edgecache serve` processes; all are killed at the end."""
    processes: list[asyncio.subprocess.Process] = []

    async def spawn(upstream: str, cache_dir: Path, *extra: str, port: int | None = None) -> Daemon:
        port = port or free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgecache", "serve",
            "--upstream", upstream,
            "--listen", f"127.0.0.1:{port}",
            "--cache-dir", str(cache_dir),
            *extra,
            env={**os.environ, "EDGECACHE_CONFIG": ""},
        )  # fmt: skip
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        await wait_until_serving(url, process)
        return process, url

    yield spawn
    for process in processes:
        if process.returncode is None:
            process.kill()
        await process.wait()


@pytest.fixture
def start_daemon(
    spawn_edgecache: SpawnEdgecache, glance_url: str, cache_dir: Path
) -> Callable[[], Awaitable[Daemon]]:
    """Start `edgecache serve` in front of the fake Glance, on the test's cache dir."""
    return lambda: spawn_edgecache(glance_url, cache_dir)


async def start_edgecache(upstream: str, cache_dir: Path, **settings: object) -> TestServer:
    values: dict[str, object] = {
        "upstream": upstream,
        "cache_dir": cache_dir,
        "chunk_size": 256 * 1024,
        "max_size": 64 * 2**20,
    }
    values.update(settings)
    server = TestServer(create_app(Settings(**values)), host="127.0.0.1")  # type: ignore[arg-type]
    await server.start_server()
    return server


async def edgecache_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgecache",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "EDGECACHE_CONFIG": "", "OS_AUTH_TOKEN": "", **(env or {})},
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()
