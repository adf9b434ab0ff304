"""`python -m benchmarks resume`: what a kill -9 in the middle of a cold fill costs (issue 22).

One synthetic Glance (benchmarks/upstream.py) and edgecache processes of its own, in a
/tmp/bench-resume-* directory it removes afterwards. Each figure is taken with `[cache]
keep_partials = 0` (start-up deletes the partial fill: the behaviour before issue 22) and
with the default (the partial is kept and resumed), runs alternating:

- kill -9 at `--at` (80%) of a cold `--size` (1 GiB) fill, start again, ask again: the bytes
  the region sent for the image in all, as a multiple of its size (the issue's target: at most
  1.25x), how long the second request took, and how long the resumed fill spent reading back
  and hashing the kept bytes (edgecache's log says);
- a cold fill nothing interrupts: its throughput and edgecache's CPU per GiB, where the
  difference is what the checkpoints cost (fdatasync every 64 MiB while partials are kept).

Every body is checked against the image's xxh3. The region is on loopback: the times say what
edgecache's own work costs, not what a slow WAN link saves (benchmarks' `wan` scenario).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import xxhash

from benchmarks.clients import AUTH
from benchmarks.procstat import cpu_seconds
from benchmarks.services import Service, launch, launch_on_free_port, wait_until
from benchmarks.stack import REPO
from edgecache.config import ConfigError, parse_size

MODES = {"keep_partials=0": 0, "kept (default)": None}
_READ = 1 << 20
_READ_BACK = re.compile(r"read back and hashed again in ([0-9.]+) s")
_CONTENT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Region:
    """The synthetic Glance, through its `/_bench` API."""

    service: Service
    xxh3: str  # of the one image size it serves

    def new_image(self, size: int, hold_at: int | None = None) -> str:
        asked = {"size": size} | ({} if hold_at is None else {"hold_at": hold_at})
        return str(self._call("/_bench/images", asked)["id"])

    def release(self, image_id: str) -> None:
        self._call(f"/_bench/release/{image_id}", {})

    def bytes_sent(self, image_id: str) -> int:
        return int(self._call("/_bench/data-bytes").get(image_id, 0))

    def _call(self, path: str, body: dict[str, int] | None = None) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.service.url + path, data=data, headers=AUTH)
        with urllib.request.urlopen(request, timeout=10) as answer:
            text = answer.read()
        return dict(json.loads(text)) if text else {}


class Node:
    """An edgecache process on its own cache dir, which can be killed and started again."""

    def __init__(self, region: Region, workdir: Path, keep_partials: int | None) -> None:
        self._region = region
        self._dir = workdir
        workdir.mkdir()
        self._config = workdir / "edgecache.toml"
        kept = "" if keep_partials is None else f"keep_partials = {keep_partials}\n"
        self._config.write_text(f"[cache]\nmax_size = {1 << 40}\n{kept}")
        self.service = self._launch()

    def _launch(self) -> Service:
        def argv(port: int) -> list[str]:
            return [
                sys.executable, "-m", "edgecache", "serve",
                "--upstream", self._region.service.url,
                "--listen", f"127.0.0.1:{port}",
                "--cache-dir", str(self._dir / "cache"),
            ]  # fmt: skip

        env = {**os.environ, "EDGECACHE_CONFIG": str(self._config)}
        return launch_on_free_port("edgecache", argv, "/healthz", self._dir / "log", env)

    def kill9_and_restart(self) -> None:
        self.service.process.kill()
        self.service.process.wait()
        self.service = self._launch()

    def url(self, image_id: str) -> str:
        return f"{self.service.url}/v2/images/{image_id}/file"

    def read_back_seconds(self) -> float | None:
        found = _READ_BACK.findall((self._dir / "log").read_text(errors="replace"))
        return float(found[-1]) if found else None


def read(url: str, stop_at: int | None = None) -> tuple[int, str, float]:
    """GET `url`: bytes received (up to `stop_at`), their xxh3 and how long it took."""
    digest, received = xxhash.xxh3_128(), 0
    started = time.monotonic()
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=600) as answer:
        while stop_at is None or received < stop_at:
            wanted = _READ if stop_at is None else min(_READ, stop_at - received)
            piece = answer.read(wanted)
            if not piece:
                break
            digest.update(piece)
            received += len(piece)
    return received, digest.hexdigest(), time.monotonic() - started


def killed_fill(region: Region, node: Node, size: int, at: int) -> dict[str, float]:
    """Kill -9 the node when its fill of a cold image holds `at` bytes; start it, ask again."""
    image = region.new_image(size, hold_at=at)
    received, _, _ = read(node.url(image), stop_at=at)  # the partial holds `at` bytes now
    assert received == at
    node.kill9_and_restart()
    region.release(image)
    os.sync()
    received, xxh3, took = read(node.url(image))
    if (received, xxh3) != (size, region.xxh3):
        raise RuntimeError(f"after the restart: {received} bytes, xxh3 {xxh3}: not the image")
    return {
        "region_bytes_x": region.bytes_sent(image) / size,
        "second_request_s": took,
        "read_back_s": node.read_back_seconds() or 0.0,
    }


def cold_fill(region: Region, node: Node, size: int) -> dict[str, float]:
    image = region.new_image(size)
    os.sync()  # the last run's dirty pages are not this one's to write back
    cpu = cpu_seconds([node.service.pid])
    received, xxh3, took = read(node.url(image))
    if (received, xxh3) != (size, region.xxh3):
        raise RuntimeError(f"cold fill: {received} bytes, xxh3 {xxh3}: not the image")
    return {
        "throughput_gbs": size / took / 1e9,
        "cpu_s_per_gib": (cpu_seconds([node.service.pid]) - cpu) / (size / 2**30),
    }


def measure(size: int, at: int, repetitions: int, workdir: Path) -> dict[str, dict[str, float]]:
    with ExitStack() as exits:
        region = _start_region(workdir, size, exits)
        nodes = {}
        for name, keep in MODES.items():
            nodes[name] = Node(region, workdir / name.split()[0].replace("=", "-"), keep)
            exits.callback(lambda node=nodes[name]: node.service.stop())
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in MODES}
        for rep in range(repetitions):
            order = list(MODES) if rep % 2 == 0 else list(reversed(MODES))
            for name in order:
                figures = killed_fill(region, nodes[name], size, at)
                figures |= cold_fill(region, nodes[name], size)
                runs[name].append(figures)
                print(f"  {name:16s} run {rep + 1}: " + _figures_text(figures), flush=True)
    return {
        name: {key: statistics.median(run[key] for run in done) for key in done[0]}
        for name, done in runs.items()
    }


def _start_region(workdir: Path, size: int, exits: ExitStack) -> Region:
    ready = workdir / "upstream" / "ready.json"
    ready.parent.mkdir()
    argv = [
        sys.executable, "-m", "benchmarks.upstream",
        "--dir", str(ready.parent), "--sizes", str(size), "--ready-file", str(ready),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    service = launch("synthetic glance", argv, ready.parent / "log", env=env)
    exits.callback(service.stop)
    wait_until(service, ready.exists, _CONTENT_TIMEOUT)
    announced = json.loads(ready.read_text())
    service.port = int(announced["port"])
    return Region(service, announced["digests"][str(size)]["xxh3"])


def _figures_text(figures: dict[str, float]) -> str:
    return (
        f"region sent {figures['region_bytes_x']:.2f}x the image, second request "
        f"{figures['second_request_s']:.1f} s (read back {figures['read_back_s']:.1f} s); "
        f"cold fill {figures['throughput_gbs']:.2f} GB/s, {figures['cpu_s_per_gib']:.2f} s CPU/GiB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks resume", description=__doc__)
    parser.add_argument("--size", default="1GiB", help="the image (default 1GiB)")
    parser.add_argument("--at", type=float, default=0.8, help="where the kill comes (0.8)")
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size, "--size")
    except ConfigError as exc:
        print(f"benchmarks resume: {exc}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-resume-", dir="/tmp"))
    try:
        medians = measure(size, int(size * args.at), args.repetitions, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nkill -9 at {args.at:.0%} of a cold {args.size} fill (medians of {args.repetitions}):")
    for name, figures in medians.items():
        print(f"  {name:16s} {_figures_text(figures)}")
    return 0
