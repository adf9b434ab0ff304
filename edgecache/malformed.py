"""Requests aiohttp cannot parse as HTTP: counted, and logged as one throttled line each.

aiohttp answers them 400 itself, before any handler or middleware runs, and logs each with a
full traceback at ERROR through the logger its server is given. A client sending garbage is
not an error of edgecache: `ProtocolLog` stands in for that logger, turns those records into
one line without a traceback at a bounded rate, and passes every other record on unchanged
(an exception in a handler is a bug and keeps its traceback).
"""

from __future__ import annotations

import logging

from aiohttp.http_exceptions import HttpProcessingError

from edgecache.metrics import Metrics
from edgecache.throttle import ThrottledLog

AIOHTTP_SERVER_LOGGER = "aiohttp.server"
_REASON_LENGTH = 100


class ProtocolLog(logging.Logger):
    """The logger for aiohttp's server (its `logger=` option)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__(AIOHTTP_SERVER_LOGGER, logging.DEBUG)
        self._target = logging.getLogger(AIOHTTP_SERVER_LOGGER)
        self._malformed = metrics.malformed_requests
        self._lines = ThrottledLog(logging.getLogger("edgecache.malformed"), logging.INFO)

    def handle(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            self._malformed.inc()
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            self._lines.log(
                "answered 400 to a request from %s that is not valid HTTP: %s",
                remote or "an unknown address",
                reason(error),
            )
        elif self._target.isEnabledFor(record.levelno):
            self._target.handle(record)


def reason(error: HttpProcessingError) -> str:
    """aiohttp's reason in a few words: its first line, without the bytes it quotes."""
    lines = (error.message or type(error).__name__).strip().splitlines()
    first = lines[0].split(": b'")[0].split(': b"')[0].rstrip(":. ")
    return first[:_REASON_LENGTH]
