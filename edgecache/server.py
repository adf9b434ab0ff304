"""Running the daemon: the public listener, the admin socket, signals, graceful shutdown.

On SIGTERM or SIGINT the listeners close first, then requests in flight get
`shutdown_timeout` seconds to finish (aiohttp's runner), then the components are closed
(fills cancelled, partial files removed, index closed), so the cache is left consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from edgecache.app import create_app
from edgecache.appkeys import METRICS
from edgecache.config import Settings
from edgecache.malformed import ProtocolLog
from edgecache.systemd import Notifier
from edgecache.unixpath import usable_socket_path

log = logging.getLogger("edgecache")


def make_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner of the daemon's listeners; malformed requests are logged by ProtocolLog."""
    return web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=settings.shutdown_timeout,
        # aiohttp arms this from the moment a connection opens, and it is not reset by bytes
        # of an unfinished request: it also closes clients that send headers byte by byte.
        keepalive_timeout=settings.client_idle_timeout,
        logger=ProtocolLog(app[METRICS]),
    )


async def run(settings: Settings) -> None:
    app = create_app(settings)
    systemd = Notifier.from_environment()
    runner = make_runner(app, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.listen_host, settings.listen_port).start()
        admin_socket = settings.admin_socket
        _remove_stale_socket(admin_socket)
        with usable_socket_path(admin_socket) as bindable:
            await web.UnixSite(runner, bindable).start()
        os.chmod(admin_socket, 0o660)
        log.info(
            "serving Glance %s on http://%s:%d (admin socket %s)",
            settings.upstream_url,
            settings.listen_host,
            settings.listen_port,
            admin_socket,
        )
        # Only now is anything listening: startup hooks run before the sites bind.
        systemd.ready()
        systemd.status(f"serving Glance {settings.upstream_url}")
        await stop.wait()
        systemd.stopping()
        systemd.status(f"shutting down: transfers in flight get {settings.shutdown_timeout:.0f}s")
        log.info("shutting down: transfers in flight get %.0fs", settings.shutdown_timeout)
    finally:
        await runner.cleanup()


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a process that was killed would make the bind fail."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
