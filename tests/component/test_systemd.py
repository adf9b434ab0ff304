"""sd_notify support against a real AF_UNIX datagram socket standing in for systemd's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecache.systemd import (
    WATCHDOG_TASK_NAME,
    Notifier,
    systemd_notify_ctx,
    watchdog_interval,
)

# A safety net so that a missing datagram fails the test instead of hanging it; every wait
# below is for a datagram or an event, never for time to pass.
PATIENCE = 30.0


class FakeSystemd:
    """The receiving end of a notify socket."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # what $NOTIFY_SOCKET would say

    async def receive(self) -> str:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), PATIENCE)
        return data.decode()

    async def receive_until(self, wanted: str) -> list[str]:
        """Every datagram up to and including the first that is exactly `wanted`."""
        seen = [await self.receive()]
        while seen[-1] != wanted:
            seen.append(await self.receive())
        return seen

    def mark(self) -> str:
        """Queue a datagram of our own: what is received after it was sent after this call."""
        marker = f"MARK={uuid.uuid4()}"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(marker.encode(), self.sock.getsockname())
        return marker


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="ec-") as name:
        yield Path(name)


@pytest.fixture
def systemd(short_dir: Path) -> Iterator[FakeSystemd]:
    path = str(short_dir / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield FakeSystemd(sock, path)


@pytest.fixture
def abstract_systemd() -> Iterator[FakeSystemd]:
    name = f"edgecache-test-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        yield FakeSystemd(sock, "@" + name)


async def test_each_notification_is_its_exact_datagram(systemd: FakeSystemd) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": systemd.name})
    assert notifier.enabled
    assert notifier.ready()
    assert await systemd.receive() == "READY=1"
    assert notifier.status("serving\non 127.0.0.1:9292")
    assert await systemd.receive() == "STATUS=serving on 127.0.0.1:9292"
    assert notifier.watchdog()
    assert await systemd.receive() == "WATCHDOG=1"
    assert notifier.stopping()
    assert await systemd.receive() == "STOPPING=1"
    assert notifier.notify("READY=1", "STATUS=up")
    assert await systemd.receive() == "READY=1\nSTATUS=up"


async def test_abstract_socket_names_start_with_at(abstract_systemd: FakeSystemd) -> None:
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": abstract_systemd.name})
    assert notifier.ready()
    assert await abstract_systemd.receive() == "READY=1"


@pytest.mark.parametrize("value", [None, "", "@", "vsock:2:1234", "relative/notify"])
def test_without_a_usable_notify_socket_nothing_is_sent(value: str | None) -> None:
    notifier = Notifier.from_environment({} if value is None else {"NOTIFY_SOCKET": value})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.stopping()
    assert not notifier.status("x")
    assert not notifier.watchdog()


def test_a_vanished_socket_is_logged_not_raised(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(short_dir / "gone"))
    with caplog.at_level(logging.WARNING, logger="edgecache.systemd"):
        assert not notifier.ready()
    assert "could not notify systemd (READY=1)" in caplog.text


OUR_PID = 4242


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "thirty"}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(OUR_PID)}, 0.5),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(OUR_PID + 1)}, None),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(environ, pid=OUR_PID) == expected


def test_watchdog_pid_defaults_to_ours() -> None:
    environ = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(environ) == 1.0


def _watchdog_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == WATCHDOG_TASK_NAME]


@pytest.fixture
def under_systemd(systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch) -> FakeSystemd:
    monkeypatch.setenv("NOTIFY_SOCKET", systemd.name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    return systemd


class SlowApp:
    """An app with the notify context and one handler that answers only when told to."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.draining = asyncio.Event()
        self.app = web.Application()
        self.app.cleanup_ctx.append(systemd_notify_ctx)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.router.add_get("/slow", self._slow)

    async def _slow(self, request: web.Request) -> web.Response:
        self.entered.set()
        await self.release.wait()
        return web.Response(text="done")

    async def _on_shutdown(self, app: web.Application) -> None:
        # aiohttp runs on_shutdown after the listeners close, just before in-flight
        # requests are given their shutdown timeout to finish.
        self.draining.set()


@pytest.fixture
async def slow_app() -> AsyncIterator[SlowApp]:
    slow = SlowApp()
    yield slow
    slow.release.set()


async def test_watchdog_is_fed_until_the_last_transfer_has_drained(
    under_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch, slow_app: SlowApp
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # pings every 10 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    server = TestServer(slow_app.app, host="127.0.0.1")
    await server.start_server()
    assert await under_systemd.receive() == "WATCHDOG=1"
    assert await under_systemd.receive() == "WATCHDOG=1"

    async with aiohttp.ClientSession() as session:

        async def slow_request() -> tuple[int, str]:
            async with session.get(server.make_url("/slow")) as response:
                return response.status, await response.text()

        request = asyncio.create_task(slow_request())
        await slow_app.entered.wait()
        closing = asyncio.create_task(server.close())
        await slow_app.draining.wait()
        # While the in-flight request holds the shutdown up, pings go on.
        await under_systemd.receive_until(under_systemd.mark())
        assert await under_systemd.receive() == "WATCHDOG=1"
        assert not closing.done()
        slow_app.release.set()
        assert await request == (200, "done")
        await closing
    assert _watchdog_tasks() == []


async def test_no_watchdog_pings_unless_systemd_asks(
    under_systemd: FakeSystemd, slow_app: SlowApp
) -> None:
    server = TestServer(slow_app.app, host="127.0.0.1")
    await server.start_server()
    try:
        assert _watchdog_tasks() == []
        marker = under_systemd.mark()
        assert await under_systemd.receive() == marker  # and no READY=1: that is the server's
    finally:
        await server.close()


async def test_serve_is_ready_only_once_listening_and_says_when_it_stops(
    under_systemd: FakeSystemd, short_dir: Path, glance_url: str
) -> None:
    """`edgecache serve` as systemd runs it: READY=1 once the port answers, WATCHDOG=1 while
    it runs, STOPPING=1 on SIGTERM, exit status 0 after the graceful shutdown."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    config = short_dir / "edgecache.toml"
    config.write_text(
        f'[upstream]\nurl = "{glance_url}"\n'
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[cache]\ndir = "{short_dir / "cache"}"\n'
    )
    env = {**os.environ, "WATCHDOG_USEC": "200000"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgecache", "serve", "--config", str(config), env=env
    )
    try:
        await under_systemd.receive_until("READY=1")
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            assert response.status == 200
        await under_systemd.receive_until("WATCHDOG=1")
        process.send_signal(signal.SIGTERM)
        await under_systemd.receive_until("STOPPING=1")
        assert await asyncio.wait_for(process.wait(), PATIENCE) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
