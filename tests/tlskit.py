"""Real TLS for tests: trustme certificates on disk, the fake Glance over HTTPS, and
`edgecache serve` processes that speak HTTPS themselves."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import trustme
from aiohttp import web

from tests.conftest import free_port
from tests.fakeglance import FakeGlance
from tests.reliability.daemon import Config, write_config

LONG_EXPIRED = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    leaf: trustme.LeafCert

    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.leaf.cert_chain_pems[0].bytes().decode())


class Pki:
    """CAs and certificates written as PEM files under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca = trustme.CA(organization_name="Region CA")
        self.ca_file = self.write_ca(self.ca, "ca.pem")

    def write_ca(self, ca: trustme.CA, name: str) -> Path:
        path = self.directory / name
        ca.cert_pem.write_to_path(str(path))
        return path

    def issue(
        self,
        name: str,
        *hosts: str,
        ca: trustme.CA | None = None,
        not_after: datetime.datetime | None = None,
    ) -> CertFiles:
        leaf = (ca or self.ca).issue_cert(*hosts, common_name=name, not_after=not_after)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        return CertFiles(cert, key, leaf)

    def client_context(self, client: CertFiles | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if client is not None:
            context.load_cert_chain(client.cert, client.key)
        return context


def server_context(cert: CertFiles, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert.cert, cert.key)
    if client_ca is not None:
        context.load_verify_locations(cafile=str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.asynccontextmanager
async def https_glance(
    glance: FakeGlance, cert: CertFiles, client_ca: Path | None = None
) -> AsyncIterator[str]:
    """The fake Glance over HTTPS on loopback; yields its https://localhost:PORT URL."""
    runner = web.AppRunner(glance.make_app(), shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context(cert, client_ca))
    await site.start()
    try:
        yield f"https://localhost:{port}"
    finally:
        await runner.cleanup()


@dataclass
class HttpsDaemon:
    process: asyncio.subprocess.Process
    url: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_daemon(
    workdir: Path,
    upstream: str,
    config: Config,
    client: ssl.SSLContext | None,
    name: str = "edgecache",
) -> HttpsDaemon:
    """`edgecache serve` with `config` on a free port of localhost; ready once `/healthz`
    answers (over HTTPS when `config` sets a certificate: verified with `client` if given)."""
    port = free_port()
    merged: dict[str, dict[str, object]] = {
        "upstream": {"url": upstream, "failures_to_offline": 1, "probe_interval": 0.1},
        "server": {"listen": f"127.0.0.1:{port}", "shutdown_timeout": 2},
        "cache": {"dir": str(workdir / name), "chunk_size": "1MiB"},
    }
    for section, table in config.items():
        merged.setdefault(section, {}).update(table)
    config_path = workdir / f"{name}.toml"
    write_config(config_path, merged)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgecache", "serve", "--config", str(config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            env={**os.environ, "EDGECACHE_CONFIG": ""},
        )  # fmt: skip
    scheme = "https" if "tls_cert" in merged["server"] else "http"
    daemon = HttpsDaemon(process, f"{scheme}://localhost:{port}", port, log_path)
    await _wait_serving(daemon, client)
    return daemon


async def stop_daemon(daemon: HttpsDaemon) -> None:
    if daemon.process.returncode is None:
        daemon.process.terminate()
        try:
            await asyncio.wait_for(daemon.process.wait(), 20)
        except TimeoutError:
            daemon.process.kill()
            await daemon.process.wait()


async def _wait_serving(daemon: HttpsDaemon, client: ssl.SSLContext | None) -> None:
    connector = aiohttp.TCPConnector(ssl=client if client is not None else False)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(400):
            if daemon.process.returncode is not None:
                raise RuntimeError(f"edgecache exited: {daemon.log()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"{daemon.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.025)  # polling a port that is not open yet
    raise TimeoutError(f"edgecache did not start: {daemon.log()[-2000:]}")


async def wait_for_log(daemon: HttpsDaemon, text: str) -> None:
    for _ in range(400):
        if text in daemon.log():
            return
        await asyncio.sleep(0.025)  # polling another process's log
    raise AssertionError(f"{text!r} never appeared: {daemon.log()[-2000:]}")
