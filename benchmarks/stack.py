"""The systems under test, started together: synthetic Glance, edgecache and nginx.

For the TLS scenarios a second edgecache serves HTTPS ([server] tls_cert/tls_key) and nginx
serves the same cache on a second port with `ssl`, both with one test certificate (trustme).

All three listen on loopback ports found at run time, keep their files in one temporary
directory, and are stopped by the ExitStack they were registered with, whatever happens.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import trustme

from benchmarks import nginx
from benchmarks.clients import AUTH
from benchmarks.content import Digests
from benchmarks.procstat import with_children
from benchmarks.services import Service, launch, launch_on_free_port, wait_until

EDGECACHE = "edgecache"
NGINX = "nginx"
DIRECT = "direct"
REPO = Path(__file__).resolve().parent.parent
_CONTENT_TIMEOUT = 600.0  # generating and hashing the largest image
_CAPACITY = 1 << 40  # both caches keep everything: every cold run adds an image


@dataclass(frozen=True)
class Contender:
    """One way of serving Glance's API that the scenarios measure."""

    name: str
    url: str
    pid: int
    processes: Callable[[], list[int]]  # whose CPU time counts as this contender's
    source_header: str  # the response header saying where the bytes came from
    hit: str  # its value on a cache hit ("" when the contender has no cache)
    miss: str  # its value when the request filled the cache

    def image_url(self, image_id: str, suffix: str = "") -> str:
        return f"{self.url}/v2/images/{image_id}{suffix}"


@dataclass(frozen=True)
class Stack:
    upstream: Service
    edgecache: Service
    nginx: Service
    nginx_version: str
    content: Path
    digests: dict[int, Digests]
    edgecache_tls: Service
    nginx_tls_port: int

    @property
    def tls_contenders(self) -> list[Contender]:
        """edgecache and nginx over HTTPS (same names: the report compares them alike)."""
        plain = {contender.name: contender for contender in self.contenders}
        edgecache = self.edgecache_tls.pid
        return [
            replace(
                plain[EDGECACHE],
                url=self.edgecache_tls.url,
                pid=edgecache,
                processes=lambda: [edgecache],
            ),
            replace(plain[NGINX], url=f"https://127.0.0.1:{self.nginx_tls_port}"),
        ]

    @property
    def contenders(self) -> list[Contender]:
        edgecache = self.edgecache.pid
        upstream = self.upstream.pid
        master = self.nginx.pid
        return [
            Contender(
                EDGECACHE,
                self.edgecache.url,
                edgecache,
                lambda: [edgecache],
                "X-Edgecache-Source",
                "cache",
                "fill",
            ),
            Contender(
                NGINX,
                self.nginx.url,
                master,
                lambda: with_children(master),
                "X-Cache-Status",
                "HIT",
                "MISS",
            ),
            Contender(DIRECT, self.upstream.url, upstream, lambda: [upstream], "X-Cache", "", ""),
        ]

    def processes(self) -> list[int]:
        """Every server process the stack started."""
        return [
            self.upstream.pid,
            self.edgecache.pid,
            self.edgecache_tls.pid,
            *with_children(self.nginx.pid),
        ]

    def check(self) -> None:
        """Raise ServiceFailed if any server has exited."""
        for service in (self.upstream, self.edgecache, self.edgecache_tls, self.nginx):
            service.check()

    def new_image(self, size: int) -> str:
        """A new image id on the upstream, with `size` bytes no cache has seen under it."""
        request = urllib.request.Request(
            f"{self.upstream.url}/_bench/images",
            data=json.dumps({"size": size}).encode(),
            headers={"Content-Type": "application/json", **AUTH},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(json.load(answer)["id"])

    def data_gets(self, image_id: str) -> int:
        """How many times the upstream was asked for this image's data (transfers)."""
        return self._count("data-gets", image_id)

    def download_checks(self, image_id: str) -> int:
        """How many one-byte GETs asked the upstream's download decision for this image."""
        return self._count("download-checks", image_id)

    def _count(self, what: str, image_id: str) -> int:
        with urllib.request.urlopen(f"{self.upstream.url}/_bench/{what}", timeout=10) as answer:
            return int(json.load(answer).get(image_id, 0))


def start(
    workdir: Path,
    sizes: list[int],
    nginx_workers: str,
    edgecache_config: Path | None,
    exits: ExitStack,
    log: Callable[[str], None],
) -> Stack:
    """Start everything, registering each server's stop with `exits` as soon as it runs."""
    nginx_binary = nginx.ensure_installed()
    for name in ("upstream", "edgecache", "edgecache-tls", "nginx", "tls"):
        (workdir / name).mkdir()
    log(f"generating {max(sizes) / 2**30:.2f} GiB of image content and its digests")
    ready_file = workdir / "upstream" / "ready.json"
    upstream = launch(
        "synthetic glance",
        [
            sys.executable,
            "-m",
            "benchmarks.upstream",
            "--dir",
            str(workdir / "upstream"),
            "--sizes",
            ",".join(str(size) for size in sizes),
            "--ready-file",
            str(ready_file),
        ],
        workdir / "upstream" / "log",
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    exits.callback(upstream.stop)
    wait_until(upstream, ready_file.exists, _CONTENT_TIMEOUT)
    ready = json.loads(ready_file.read_text())
    upstream.port = int(ready["port"])
    digests = {int(size): Digests(**found) for size, found in ready["digests"].items()}

    def edgecache_argv(port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "edgecache",
            "serve",
            "--upstream",
            upstream.url,
            "--listen",
            f"127.0.0.1:{port}",
            "--cache-dir",
            str(workdir / "edgecache" / "cache"),
            "--max-size",
            str(_CAPACITY),
        ]

    edgecache = launch_on_free_port(
        EDGECACHE,
        edgecache_argv,
        "/healthz",
        workdir / "edgecache" / "log",
        # flags (and the --edgecache-config file, if any), never /etc/edgecache
        env={**os.environ, "EDGECACHE_CONFIG": str(edgecache_config or "")},
    )
    exits.callback(edgecache.stop)
    cert, key = _certificate(workdir / "tls")
    tls_config = workdir / "edgecache-tls" / "edgecache.toml"
    _write_tls_config(tls_config, edgecache_config, cert, key)

    def edgecache_tls_argv(port: int) -> list[str]:
        argv = edgecache_argv(port)
        argv[argv.index("--cache-dir") + 1] = str(workdir / "edgecache-tls" / "cache")
        return argv

    edgecache_tls = launch_on_free_port(
        "edgecache (TLS)",
        edgecache_tls_argv,
        "/healthz",
        workdir / "edgecache-tls" / "log",
        env={**os.environ, "EDGECACHE_CONFIG": str(tls_config)},
        scheme="https",
    )
    exits.callback(edgecache_tls.stop)
    proxy, nginx_tls_port = nginx.start(
        nginx_binary, workdir / "nginx", upstream.port, _CAPACITY, nginx_workers, (cert, key)
    )
    exits.callback(proxy.stop)
    return Stack(
        upstream=upstream,
        edgecache=edgecache,
        nginx=proxy,
        nginx_version=nginx.version(nginx_binary),
        content=Path(ready["content"]),
        digests=digests,
        edgecache_tls=edgecache_tls,
        nginx_tls_port=nginx_tls_port,
    )


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 from a throwaway CA (clients do not verify: speed only)."""
    leaf = trustme.CA().issue_cert("127.0.0.1")
    cert, key = directory / "server.pem", directory / "server.key"
    cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def _write_tls_config(path: Path, base: Path | None, cert: Path, key: Path) -> None:
    """The --edgecache-config file's settings (if any) with [server] tls_cert and tls_key."""
    tables: dict[str, dict[str, object]] = {}
    if base is not None:
        tables = tomllib.loads(base.read_text())
    tables.setdefault("server", {}).update(tls_cert=str(cert), tls_key=str(key))
    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        # JSON strings, numbers, booleans and lists of them are TOML values too
        lines.extend(f"{name} = {json.dumps(value)}" for name, value in table.items())
    path.write_text("\n".join(lines) + "\n")
