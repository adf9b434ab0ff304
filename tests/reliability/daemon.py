"""Real `python -m edgecache serve` processes with a TOML config, their stderr kept in a file."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.conftest import free_port

Config = Mapping[str, Mapping[str, object]]


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_config(path: Path, config: Config) -> None:
    lines: list[str] = []
    for section, table in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in table.items())
        lines.append("")
    path.write_text("\n".join(lines))


@dataclass
class Daemon:
    process: asyncio.subprocess.Process
    url: str
    cache_dir: Path
    stderr_path: Path
    admin_socket: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_kib(self) -> int | None:
        """The process's resident set size (VmRSS) in KiB, or None once it is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return None

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def kill9(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self, within: float = 20) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


class Daemons:
    """Starts daemons (each with its own config file and stderr file); all killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Daemon] = []

    async def start(
        self,
        upstream: str,
        cache_dir: Path,
        config: Config | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> Daemon:
        number = len(self.started)
        port = free_port()
        merged: dict[str, dict[str, object]] = {
            "upstream": {"url": upstream},
            "server": {"listen": f"127.0.0.1:{port}", "shutdown_timeout": 2},
            "cache": {"dir": str(cache_dir)},
        }
        for section, table in (config or {}).items():
            merged.setdefault(section, {}).update(table)
        config_path = self.workdir / f"edgecache-{number}.toml"
        write_config(config_path, merged)
        stderr_path = self.workdir / f"edgecache-{number}.stderr"
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgecache", "serve", "--config", str(config_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env={**os.environ, "EDGECACHE_CONFIG": ""},
                preexec_fn=preexec,
            )  # fmt: skip
        admin = merged["server"].get("admin_socket", cache_dir / "admin.sock")
        url = f"http://127.0.0.1:{port}"
        daemon = Daemon(process, url, cache_dir, stderr_path, Path(str(admin)))
        self.started.append(daemon)
        await wait_serving(daemon)
        return daemon

    async def close(self) -> None:
        for daemon in self.started:
            if daemon.process.returncode is None:
                daemon.process.kill()
            with contextlib.suppress(ProcessLookupError):
                await daemon.process.wait()


async def wait_serving(daemon: Daemon, attempts: int = 400) -> None:
    """Poll /healthz (bounded) until the daemon answers; fail if it exits first."""
    async with aiohttp.ClientSession() as session:
        for _ in range(attempts):
            if daemon.process.returncode is not None:
                raise RuntimeError(
                    f"edgecache exited with {daemon.process.returncode}: {daemon.stderr()[-2000:]}"
                )
            try:
                async with session.get(f"{daemon.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.025)  # polling a port that is not open yet
    raise TimeoutError(f"edgecache did not start: {daemon.stderr()[-2000:]}")
