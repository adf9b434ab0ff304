"""edgecache itself as a real subprocess (``python -m edgecache serve --config FILE``).

For the integration tests and the demo: a generated TOML config in ``base_dir``, a free
loopback port, the log in ``base_dir/edgecache.log``. Standard library only, like the rest
of this package. On Linux the daemon is told to exit if the process that started it dies
(``PR_SET_PDEATHSIG``), so a crashed test run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from . import rest
from .errors import StackError
from .openstack import Credentials

_PR_SET_PDEATHSIG = 1
# Settings that keep a test or a demo quick: the uplink is declared down after one failure
# and probed five times a second; 1 MiB chunks, so a few-MiB image has several.
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "upstream": {"failures_to_offline": 1, "probe_interval": 0.2, "connect_timeout": 2},
    "cache": {"max_size": "2GiB", "chunk_size": "1MiB"},
}


class EdgecacheDaemon:
    """One ``edgecache serve`` process in front of ``upstream`` (a Glance URL)."""

    def __init__(
        self,
        base_dir: Path,
        upstream: str,
        *,
        keystone: Credentials | None = None,
        settings: Mapping[str, Mapping[str, Any]] = QUICK_SETTINGS,
        python: str = sys.executable,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``keystone``: service credentials for the ``[keystone]`` section (e.g. the stack's
        ``glance_service``); ``settings``: extra TOML tables; ``python``: an interpreter that
        has edgecache installed; ``tls``: with ``[server] tls_cert`` in ``settings``, how
        to verify edgecache's HTTPS (its URL is then ``https://``)."""
        self.base_dir = Path(base_dir).resolve()
        self.upstream = upstream
        self.host = host
        self.port = _free_port(host)
        self.cache_dir = self.base_dir / "cache"
        self.config_path = self.base_dir / "edgecache.toml"
        self.log_path = self.base_dir / "edgecache.log"
        self._keystone = keystone
        self._settings = settings
        self._python = python
        self._tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise StackError("edgecache is not running")
        return self._proc.pid

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> Self:
        """Write the config, start the daemon and wait until ``/healthz`` answers."""
        if self._proc is not None:
            raise StackError("edgecache is already running")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        argv = [self._python, "-m", "edgecache", "serve", "--config", str(self.config_path)]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "EDGECACHE_"))}
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def config_text(self) -> str:
        tables: dict[str, dict[str, Any]] = {
            "upstream": {"url": self.upstream},
            "server": {"listen": f"{self.host}:{self.port}", "log_level": "info"},
            "cache": {"dir": str(self.cache_dir)},
        }
        if self._keystone is not None:
            k = self._keystone
            tables["keystone"] = {
                "auth_url": k.auth_url,
                "username": k.username,
                "password": k.password,
                "project_name": k.project_name,
                "user_domain_name": k.user_domain_name,
                "project_domain_name": k.project_domain_name,
            }
        for name, table in self._settings.items():
            tables.setdefault(name, {}).update(table)
        return "".join(_toml_table(name, table) for name, table in tables.items())

    # -- what tests read ----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        document: dict[str, Any] = rest.request(
            "GET", f"{self.url}/healthz", expect={200}, timeout=10, tls=self._tls
        ).json()
        return document

    def wait_uplink(self, state: str, timeout: float = 30.0) -> float:
        """Poll ``/healthz`` until it reports ``"uplink": state``; return the seconds it took."""
        started = time.monotonic()
        while (seen := self.health()["uplink"]) != state:
            if time.monotonic() - started > timeout:
                raise StackError(f"edgecache still reports uplink {seen!r} after {timeout:.0f} s")
            time.sleep(0.05)
        return time.monotonic() - started

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}, comments left out."""
        text = rest.request("GET", f"{self.url}/metrics", expect={200}, tls=self._tls).body.decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(
                    f"edgecache exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, StackError):
                healthz = rest.request("GET", f"{self.url}/healthz", timeout=5, tls=self._tls)
                if healthz.status == 200:
                    return
            time.sleep(0.05)
        raise StackError(
            f"edgecache not ready at {self.url} after {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )


def _toml_table(name: str, table: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"]
    for key, value in table.items():
        # JSON strings, numbers and booleans are valid TOML values.
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us when the parent dies (Linux only)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
