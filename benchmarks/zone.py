"""The zone scenario: a boot storm on three edgecache nodes behind the project's HAProxy.

`python -m benchmarks.zone [--size 64MiB] [--rate 400mbit] [--clients 24]`, as root (it makes
network namespaces). One run measures two configurations of the same zone, each on a new cold
image: today's (consistent hashing only, nodes that do not know each other) and the zone's
(`hash-balance-factor`, `[zone] peers`). It reports, for each: data GETs at the region, the
share of the storm's bytes served by the busiest node, and the time until the last client had
the whole image; and the ratio of those times.

Everything runs in namespaces made here (`ecz<pid>-*`) on 10.231.0.0/24: a front namespace
with a bridge, HAProxy and the clients; one namespace per node and one for the synthetic
Glance, each joined to the bridge by a veth pair whose sending side is limited to `--rate`
with `tc ... tbf`. Nothing is added to the host's own namespace; all is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgecache.config import ConfigError, parse_size

HAPROXY_CONFIG = Path(__file__).parents[1] / "config" / "haproxy.cfg"
SUBNET = "10.231.0"
FRONT_ADDRESS = f"{SUBNET}.1"
REGION_ADDRESS = f"{SUBNET}.2"
NODE_ADDRESSES = {"node1": f"{SUBNET}.11", "node2": f"{SUBNET}.12", "node3": f"{SUBNET}.13"}
PORT = 9292
ZONE_PORT = 9293  # the nodes' zone listeners ([zone] listen), which HAProxy does not know


@dataclass(frozen=True)
class Zone:
    prefix: str

    def ns(self, name: str) -> str:
        return f"{self.prefix}-{name}"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


@contextmanager
def shaped_zone(rate: str, queue: str) -> Iterator[Zone]:
    """The namespaces, bridge and shaped veth pairs; removed on the way out."""
    zone = Zone(f"ecz{os.getpid()}")
    members = {"region": REGION_ADDRESS, **NODE_ADDRESSES}
    made: list[str] = []
    try:
        for name in ["front", *members]:
            _ip("netns", "add", zone.ns(name))
            made.append(zone.ns(name))
            _ip("-n", zone.ns(name), "link", "set", "lo", "up")
        front = zone.ns("front")
        _ip("-n", front, "link", "add", "br0", "type", "bridge")
        _ip("-n", front, "addr", "add", f"{FRONT_ADDRESS}/24", "dev", "br0")
        _ip("-n", front, "link", "set", "br0", "up")
        for name, address in members.items():
            port = f"v-{name}"
            _ip(
                "-n",
                front,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "eth0",
                "netns",
                zone.ns(name),
            )
            _ip("-n", front, "link", "set", port, "master", "br0", "up")
            _ip("-n", zone.ns(name), "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", zone.ns(name), "link", "set", "eth0", "up")
            tc = ["tc", "-n", zone.ns(name), "qdisc", "add", "dev", "eth0"]
            subprocess.run(
                [*tc, "root", "handle", "1:", "tbf", "rate", rate, "burst", "256kb",
                 "latency", queue],
                check=True,
            )  # fmt: skip
            # Bands by ToS within the rate, as a default Linux queue has them (the kernel here
            # may lack fq_codel): edgecache marks the connections its fills use low-delay.
            subprocess.run([*tc, "parent", "1:1", "handle", "10:", "pfifo_fast"], check=True)
        yield zone
    finally:
        for name in made:  # a namespace's veth ends go with it
            subprocess.run(["ip", "netns", "del", name], check=False)


class Processes:
    """Processes started inside the zone's namespaces; all stopped on close."""

    def __init__(self, zone: Zone, logs: Path) -> None:
        self._zone = zone
        self._logs = logs
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, ns: str, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self._logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self._zone.ns(ns), *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "EDGECACHE_CONFIG": ""},
            )
        self._started.append(process)
        return process

    def pids(self) -> list[int]:
        return [process.pid for process in self._started]

    def stop_all(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.terminate()
        for process in self._started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._started.clear()


def _region(processes: Processes, workdir: Path, size: int) -> tuple[str, str]:
    """Start the synthetic Glance; its URL and the image's xxh3."""
    ready = workdir / "region.json"
    processes.start(
        "region",
        "region",
        [sys.executable, "-m", "benchmarks.upstream", "--dir", str(workdir),
         "--sizes", str(size), "--ready-file", str(ready), "--host", REGION_ADDRESS],
    )  # fmt: skip
    for _ in range(1200):
        if ready.exists():
            announced = json.loads(ready.read_text())
            digest = announced["digests"][str(size)]["xxh3"]
            return f"http://{REGION_ADDRESS}:{announced['port']}", str(digest)
        time.sleep(0.05)  # waiting for another process's ready file
    raise RuntimeError("the synthetic Glance never became ready")


def haproxy_config(zone_mode: bool) -> str:
    """The shipped file on the zone's addresses; today's configuration has no bounded loads."""
    text = HAPROXY_CONFIG.read_text()
    text = re.sub(r"bind 127\.0\.0\.1:\d+", f"bind {FRONT_ADDRESS}:{PORT}", text)
    text = re.sub(r"\n    log stdout format raw local0", "", text)
    for name, address in NODE_ADDRESSES.items():
        text = re.sub(rf"server {name} \S+", f"server {name} {address}:{PORT}", text)
    if not zone_mode:
        text = re.sub(r"\n    hash-balance-factor \d+", "", text)
    return text


def node_config(name: str, zone_mode: bool, secret: str) -> str:
    if not zone_mode:
        return ""
    peers = ", ".join(f'"http://{address}:{ZONE_PORT}"' for address in NODE_ADDRESSES.values())
    me = f"{NODE_ADDRESSES[name]}:{ZONE_PORT}"
    return (
        f'[zone]\npeers = [{peers}]\nself = "http://{me}"\nlisten = "{me}"\nsecret = "{secret}"\n'
    )


def measure(
    zone: Zone, workdir: Path, region: tuple[str, str], zone_mode: bool, args: argparse.Namespace
) -> dict[str, Any]:
    label = "zone" if zone_mode else "today"
    processes = Processes(zone, workdir)
    try:
        secret = secrets.token_hex(16)
        for name, address in NODE_ADDRESSES.items():
            config = workdir / f"{label}-{name}.toml"
            config.write_text(node_config(name, zone_mode, secret))
            processes.start(
                name,
                f"{label}-{name}",
                [sys.executable, "-m", "edgecache", "serve", "--config", str(config),
                 "--upstream", region[0], "--listen", f"{address}:{PORT}",
                 "--cache-dir", str(workdir / label / name), "--max-size", "4GiB"],
            )  # fmt: skip
        haproxy = workdir / f"{label}-haproxy.cfg"
        haproxy.write_text(haproxy_config(zone_mode))
        binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if binary is None:
            raise RuntimeError("HAProxy is not installed: apt-get install haproxy")
        processes.start("front", f"{label}-haproxy", [binary, "-db", "-f", str(haproxy)])
        nodes = ",".join(f"http://{address}:{PORT}" for address in NODE_ADDRESSES.values())
        clients = subprocess.run(
            ["ip", "netns", "exec", zone.ns("front"), sys.executable, "-m",
             "benchmarks.zone_clients", "--front", f"http://{FRONT_ADDRESS}:{PORT}",
             "--region", region[0], "--nodes", nodes, "--size", str(args.size),
             "--xxh3", region[1], "--clients", str(args.clients)],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        result: dict[str, Any] = json.loads(clients.stdout)
    finally:
        processes.stop_all()
    served = result["served_bytes"]
    result["busiest_share"] = max(served) / sum(served) if sum(served) else 0.0
    return result


def report(today: dict[str, Any], zone: dict[str, Any]) -> str:
    ratio = zone["last_client_s"] / today["last_client_s"]
    lines = [
        f"{'':28}{'today':>12}{'zone':>12}   target",
        f"{'region data GETs':28}{today['region_gets']:>12}{zone['region_gets']:>12}   1",
        f"{'busiest node share':28}{today['busiest_share']:>12.0%}{zone['busiest_share']:>12.0%}"
        "   <= 45%",
        f"{'last client done (s)':28}{today['last_client_s']:>12.1f}{zone['last_client_s']:>12.1f}"
        f"   zone/today {ratio:.2f} <= 0.5",
    ]
    for label, run in (("today", today), ("zone", zone)):
        per_node = ", ".join(f"{b / 2**20:.0f}" for b in run["served_bytes"])
        siblings = ", ".join(f"{b / 2**20:.0f}" for b in run["sibling_fetched_bytes"])
        lines.append(f"{label}: MiB served per node [{per_node}], from siblings [{siblings}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="64MiB", help="the image's size (default 64MiB)")
    parser.add_argument("--rate", default="400mbit", help="each link's rate, as tc writes it")
    parser.add_argument(
        "--queue",
        default="100ms",
        help="how long a packet may wait in a link's queue (tbf latency; default 100ms)",
    )
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args(argv)
    try:
        args.size = parse_size(args.size, "--size")
    except ConfigError as exc:
        print(f"benchmarks.zone: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("benchmarks.zone: run as root (it makes network namespaces)", file=sys.stderr)
        return 2
    with ExitStack() as exits:
        workdir = Path(tempfile.mkdtemp(prefix="bench-zone-", dir="/tmp"))
        exits.callback(shutil.rmtree, workdir, ignore_errors=True)
        zone = exits.enter_context(shaped_zone(args.rate, args.queue))
        region_processes = Processes(zone, workdir)
        exits.callback(region_processes.stop_all)
        region = _region(region_processes, workdir, args.size)
        try:
            today = measure(zone, workdir, region, False, args)
            zoned = measure(zone, workdir, region, True, args)
        except subprocess.CalledProcessError as exc:
            print(f"benchmarks.zone: the clients failed:\n{exc.stderr}", file=sys.stderr)
            for log in sorted(workdir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
            return 1
    print(f"zone scenario: {args.clients} clients, one cold {args.size / 2**20:.0f} MiB image, "
          f"3 nodes, every link {args.rate} with a {args.queue} queue")  # fmt: skip
    print(report(today, zoned))
    if args.out is not None:
        args.out.write_text(json.dumps({"today": today, "zone": zoned}, indent=2))
    broken = today["problems"] or zoned["problems"]
    if broken:
        print(f"wrong answers: {broken}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
