"""The systems under test, started together: synthetic Glance, edgecache and nginx.

All three listen on loopback ports found at run time, keep their files in one temporary
directory, and are stopped by the ExitStack they were registered with, whatever happens.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

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
        return [self.upstream.pid, self.edgecache.pid, *with_children(self.nginx.pid)]

    def check(self) -> None:
        """Raise ServiceFailed if any server has exited."""
        for service in (self.upstream, self.edgecache, self.nginx):
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
    for name in ("upstream", "edgecache", "nginx"):
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
    proxy = nginx.start(nginx_binary, workdir / "nginx", upstream.port, _CAPACITY, nginx_workers)
    exits.callback(proxy.stop)
    return Stack(
        upstream=upstream,
        edgecache=edgecache,
        nginx=proxy,
        nginx_version=nginx.version(nginx_binary),
        content=Path(ready["content"]),
        digests=digests,
    )
