"""Gunicorn config for the test stack (runs inside the stack venv's gunicorn master).

The process that started the stack holds the write end of a pipe whose read end is passed
to us as ``EDGECACHE_STACK_LIFELINE_FD``. When that process dies for any reason (even
SIGKILL, when no cleanup code can run), the pipe reaches EOF and the master shuts itself
and its workers down, so a crashed test run leaves no servers behind.
"""

import os
import signal
import threading
from typing import Any


def when_ready(server: Any) -> None:
    fd = int(os.environ["EDGECACHE_STACK_LIFELINE_FD"])
    threading.Thread(target=_watch_lifeline, args=(fd,), name="lifeline", daemon=True).start()


def _watch_lifeline(fd: int) -> None:
    while os.read(fd, 4096):
        pass
    os.kill(os.getpid(), signal.SIGTERM)
