"""systemd integration: readiness, stopping and watchdog notifications (sd_notify(3)).

The protocol is one datagram of newline-separated `KEY=value` assignments sent to the
AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
`@`). It is simple enough that a dependency (python-systemd, sdnotify) would add more than it
saves. Outside systemd (no `$NOTIFY_SOCKET`: a shell, a container, the tests) every call is a
no-op, so the daemon needs no "am I under systemd?" switch.

Who sends what, and why there:
- `READY=1`: the server, once the listening sockets are bound (not from an aiohttp startup
  hook: those run in `runner.setup()`, before any site listens, and units ordered after
  edgecache, such as nova-compute, would be started against a port that refuses them).
- `STOPPING=1`: the server, as soon as the stop signal arrives, before in-flight transfers
  drain, so `systemctl status` says "deactivating" during the drain.
- `WATCHDOG=1`: `systemd_notify_ctx`, a task on the event loop for the application's whole life,
  including the drain and the closing of the cache, so a slow but healthy shutdown is not
  mistaken for a hang; a wedged event loop stops the pings and systemd restarts the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Mapping

from aiohttp import web

log = logging.getLogger(__name__)

WATCHDOG_TASK_NAME = "edgecache-systemd-watchdog"


class Notifier:
    """Sends notifications to systemd's notify socket; does nothing when there is none."""

    def __init__(self, socket_name: str | None) -> None:
        self._address = _socket_address(socket_name)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `assignments` in one datagram; False if not under systemd or it failed.

        Sending never blocks the event loop and never raises: the socket is non-blocking, and a
        datagram that cannot be sent (systemd's queue full, the socket gone) is logged and
        dropped. A lost watchdog ping is made good by the next one, sent at half the interval.
        """
        if self._address is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("could not notify systemd (%s): %s", " ".join(assignments), exc)
            return False
        return True

    def ready(self) -> bool:
        """Start-up is complete: systemd starts the units ordered after this one."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Shutdown has begun (whoever sent the signal)."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """One line shown by `systemctl status`."""
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """The keep-alive ping; systemd kills the service if they stop for WatchdogSec."""
        return self.notify("WATCHDOG=1")


def _socket_address(name: str | None) -> str | None:
    """The address to send to: a filesystem path as is, `@name` as the abstract `\\0name`.

    Anything else (unset, empty, or a kind of address this module does not speak, such as
    newer systemd's `vsock:`) means "not under systemd", said once in the log if unexpected.
    """
    if not name:
        return None
    if name.startswith("/"):
        return name
    if name.startswith("@") and len(name) > 1:
        return "\0" + name[1:]
    log.warning("ignoring NOTIFY_SOCKET=%r: not a path or an abstract socket name", name)
    return None


def watchdog_interval(
    environ: Mapping[str, str] = os.environ, pid: int | None = None
) -> float | None:
    """Seconds within which systemd expects a ping, or None if it expects none from us.

    As sd_watchdog_enabled(3): `$WATCHDOG_USEC` is the timeout; `$WATCHDOG_PID`, if set, names
    the process it is meant for (so a child that inherited the environment stays quiet).
    """
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("ignoring WATCHDOG_USEC=%r: not a positive number of microseconds", usec)
        return None
    intended = environ.get("WATCHDOG_PID")
    if intended:
        if not intended.isdigit():
            log.warning("ignoring the watchdog: WATCHDOG_PID=%r is not a process id", intended)
            return None
        if int(intended) != (os.getpid() if pid is None else pid):
            return None
    return int(usec) / 1_000_000


async def systemd_notify_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup context: ping systemd's watchdog while the application exists.

    Append it to `app.cleanup_ctx` before the other contexts: contexts are left in reverse
    order, so the pings go on until the cache has been closed. Pings are sent at half the
    watchdog interval, as sd_watchdog_enabled(3) recommends, so one late tick is harmless.
    """
    notifier = Notifier.from_environment()
    interval = watchdog_interval()
    if not notifier.enabled or interval is None:
        yield
        return
    pinger = asyncio.create_task(_ping(notifier, interval / 2), name=WATCHDOG_TASK_NAME)
    try:
        yield
    finally:
        pinger.cancel()
        await asyncio.gather(pinger, return_exceptions=True)


async def _ping(notifier: Notifier, period: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(period)
