"""Child processes the harness starts: launch, wait until ready, check, stop."""

from __future__ import annotations

import functools
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

_START_ATTEMPTS = 3


class ServiceFailed(RuntimeError):
    """A server the benchmark depends on exited or never became ready."""


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    scheme: str = "http"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def check(self) -> None:
        """Raise ServiceFailed, with the end of its log, if the process has exited."""
        code = self.process.poll()
        if code is not None:
            hint = " (a clean stop: signalled from outside the benchmark?)" if code <= 0 else ""
            raise ServiceFailed(f"{self.name} exited with status {code}{hint}:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        """The end of the log, without access-log lines (they say nothing about a failure)."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        kept = [line for line in text.splitlines() if ".access: " not in line]
        return "\n".join("    " + line for line in kept[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def launch(name: str, argv: list[str], log: Path, env: Mapping[str, str] | None = None) -> Service:
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env
        )
    return Service(name, process, log)


def wait_until(service: Service, ready: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        service.check()
        if time.monotonic() > deadline:
            service.stop()
            raise ServiceFailed(f"{service.name} not ready after {timeout:.0f}s:\n{service.tail()}")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_on_free_port(
    name: str,
    argv_for_port: Callable[[int], list[str]],
    ready_path: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    scheme: str = "http",
) -> Service:
    """Start a server on a free port, answering `ready_path`; retry if the port was taken."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        port = free_port()
        service = launch(name, argv_for_port(port), log, env)
        service.port = port
        service.scheme = scheme
        try:
            wait_until(service, functools.partial(answers, service.url + ready_path), timeout)
            return service
        except BaseException as exc:
            service.stop()
            if not isinstance(exc, ServiceFailed) or attempt == _START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# For the harness's own requests to HTTPS contenders: their readiness and answers, not identity.
UNVERIFIED = _unverified()


def answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (an error status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=UNVERIFIED):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
