"""Running the daemon: the public listener, the admin socket, the zone's listener, signals,
graceful shutdown.

With `[server] tls_cert` the listen address speaks HTTPS only; SIGHUP re-reads the certificate
and key into the live SSL context, which new handshakes use while connections already open keep
the one they started with (transfers in flight are not cut).

With `[zone] peers`, the sibling endpoint (edgecache.zone.endpoint) is served on `[zone]
listen` by its own runner, built once the main application's components are.

On SIGTERM or SIGINT the listeners close first, then requests in flight get
`shutdown_timeout` seconds to finish (aiohttp's runner: the siblings' first, since they read
from the components, then the clients'), then the components are closed (fills cancelled,
partial files removed, index closed), so the cache is left consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
from pathlib import Path

from aiohttp import web

from edgecache.api.operator import create_operator_app
from edgecache.app import create_app
from edgecache.appkeys import METRICS
from edgecache.config import ConfigError, Settings
from edgecache.malformed import ProtocolLog
from edgecache.systemd import Notifier
from edgecache.tls import ServerTls, load_server_certificate, server_context
from edgecache.unixpath import usable_socket_path
from edgecache.upstream.certificates import certificate_file_summary
from edgecache.zone.endpoint import create_zone_app

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
    listeners = [(server_context(tls), tls) for tls in ServerTls.all(settings)]
    (ssl_context, _), (zone_context, _) = listeners
    reloadable = [(context, tls) for context, tls in listeners if context is not None]
    if reloadable:
        loop.add_signal_handler(signal.SIGHUP, _reload_certificates, reloadable)
    await runner.setup()
    zone_runner: web.AppRunner | None = None
    operator_runner: web.AppRunner | None = None
    try:
        await web.TCPSite(
            runner, settings.listen_host, settings.listen_port, ssl_context=ssl_context
        ).start()
        operator_runner = make_runner(create_operator_app(app), settings)
        await operator_runner.setup()
        admin_socket = settings.admin_socket
        _remove_stale_socket(admin_socket)
        with usable_socket_path(admin_socket) as bindable:
            await web.UnixSite(operator_runner, bindable).start()
        os.chmod(admin_socket, 0o660)
        if settings.zone_listen is not None:
            zone_runner = make_runner(create_zone_app(app), settings)
            await zone_runner.setup()
            host, port = settings.zone_listen
            await web.TCPSite(zone_runner, host, port, ssl_context=zone_context).start()
            scheme = "https" if zone_context else "http"
            log.info("answering the zone's siblings on %s://%s:%d", scheme, host, port)
        log.info(
            "serving Glance %s on %s://%s:%d (admin socket %s)",
            settings.upstream_url,
            "https" if ssl_context else "http",
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
        for site in list(runner.sites):  # no new client connections while siblings finish
            await site.stop()
        if operator_runner is not None:
            await operator_runner.cleanup()
        if zone_runner is not None:
            await zone_runner.cleanup()
        await runner.cleanup()


def _reload_certificates(listeners: list[tuple[ssl.SSLContext, ServerTls]]) -> None:
    for context, tls in listeners:
        _reload_certificate(context, tls)


def _reload_certificate(context: ssl.SSLContext, tls: ServerTls) -> None:
    try:
        load_server_certificate(context, tls)
    except ConfigError as exc:
        log.error(
            "The %s was not reloaded (%s); still serving the previous one.", tls.description, exc
        )
        return
    assert tls.cert is not None
    log.info(
        "%s reloaded from %s (%s); new connections get it",
        tls.description,
        tls.cert,
        certificate_file_summary(tls.cert),
    )


def _remove_stale_socket(path: Path) -> None:
    """A socket file left by a process that was killed would make the bind fail."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
