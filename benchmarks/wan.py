"""The wan scenario (issue 22): one edgecache behind a shaped uplink, boots against a warm.

`python -m benchmarks wan [--quick] [--mbit 200] [--rtt-ms 40] [--out FILE]`, as root (it
makes network namespaces). The synthetic Glance (benchmarks/upstream.py) sits in a region
namespace, edgecache and its clients in an edge namespace (benchmarks/wan_edge.py), and a
router namespace between them limits each direction to `--mbit` with `tc ... tbf` and delays
every packet by half of `--rtt-ms` (benchmarks/delayline.py: this kernel has no netem).
Nothing is added to the host's own namespace; everything is removed at the end.

Measured with the uplink budget off (`[upstream] max_rate` unset: today's behaviour) and on:
- a boot (a record, then the whole image) alone, and started while a warm of several images
  (queued as `glance cache-queue` queues them, fetched in parallel) is under way; target: the
  boot during the warm takes at most 1.2x the boot alone. With the budget on, max_rate is
  `--boot-share` of the link (a little below it, so that the budget decides who goes first);
- the uplink rate during the warm with max_rate at half the link: target within 5% of it;
- once: a cold fill killed (SIGKILL) at 80%, the daemon restarted, the image asked again:
  the image bytes the region sent against the image's size (and the link's count); target at
  most 1.25x. Partial fills that survive a restart (`[cache] keep_partials`) are what meet it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.zone import Processes, Zone
from edgecache.config import ConfigError, parse_size

REGION_ADDRESS, REGION_ROUTER = "10.232.1.2", "10.232.1.1"
EDGE_ADDRESS, EDGE_ROUTER = "10.232.2.2", "10.232.2.1"
EDGE_PORT = 9292
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "wan.json"
FULL = {"boot": "256MiB", "warm": "512MiB", "kill": "1GiB", "lead_in": 3.0, "window": 20.0}
QUICK = {"boot": "32MiB", "warm": "64MiB", "kill": "128MiB", "lead_in": 1.5, "window": 5.0}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def _wait_for(path: Path, what: str) -> None:
    for _ in range(1200):
        if path.exists():
            return
        time.sleep(0.05)  # waiting for another process's ready file
    raise RuntimeError(f"{what} never became ready")


@contextmanager
def shaped_wan(args: argparse.Namespace, workdir: Path) -> Iterator[tuple[Zone, Processes]]:
    """Region and edge namespaces, each joined by a veth pair to a router namespace that
    shapes and delays what it forwards; the processes started in them are stopped and the
    namespaces removed on the way out."""
    wan = Zone(f"ecw{os.getpid()}")
    made: list[str] = []
    processes = Processes(wan, workdir)
    try:
        for name in ("region", "router", "edge"):
            _ip("netns", "add", wan.ns(name))
            made.append(wan.ns(name))
            _ip("-n", wan.ns(name), "link", "set", "lo", "up")
        router = wan.ns("router")
        for side, address, gateway, port in (
            ("region", REGION_ADDRESS, REGION_ROUTER, "to-region"),
            ("edge", EDGE_ADDRESS, EDGE_ROUTER, "to-edge"),
        ):
            _ip("-n", router, "link", "add", "name", port, "type", "veth",
                "peer", "name", "eth0", "netns", wan.ns(side))  # fmt: skip
            _ip("-n", router, "addr", "add", f"{gateway}/24", "dev", port)
            _ip("-n", router, "link", "set", port, "up")
            _ip("-n", wan.ns(side), "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", wan.ns(side), "link", "set", "eth0", "up")
            _ip("-n", wan.ns(side), "route", "add", "default", "via", gateway)
            subprocess.run(
                ["tc", "-n", router, "qdisc", "add", "dev", port, "root", "tbf",
                 "rate", f"{args.mbit}mbit", "burst", "256kb", "latency", args.queue],
                check=True,
            )  # fmt: skip
        subprocess.run(
            ["ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1",
             "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
            check=True,
        )  # fmt: skip
        ready = workdir / "delayline.ready"
        processes.start(
            "router",
            "delayline",
            [sys.executable, "-m", "benchmarks.delayline", "--tun", "delay0",
             "--delay", str(args.rtt_ms / 2000), "--ready-file", str(ready)],
        )  # fmt: skip
        _wait_for(ready, "the delay line")
        # Everything the router forwards goes through the delay line, and then on.
        _ip("-n", router, "link", "set", "delay0", "up")
        _ip("-n", router, "route", "add", "default", "dev", "delay0", "table", "100")
        for port in ("to-region", "to-edge"):
            _ip("-n", router, "rule", "add", "iif", port, "lookup", "100")
        yield wan, processes
    finally:
        processes.stop_all()
        for name in made:  # a namespace's veth ends go with it
            subprocess.run(["ip", "netns", "del", name], check=False)


def start_region(processes: Processes, workdir: Path, sizes: list[int]) -> dict[str, Any]:
    """The synthetic Glance in the region namespace: what it announced (port, digests)."""
    ready = workdir / "region.json"
    processes.start(
        "region",
        "region",
        [sys.executable, "-m", "benchmarks.upstream", "--dir", str(workdir),
         "--sizes", ",".join(map(str, sizes)), "--ready-file", str(ready),
         "--host", REGION_ADDRESS],
    )  # fmt: skip
    _wait_for(ready, "the synthetic Glance")
    announced: dict[str, Any] = json.loads(ready.read_text())
    return announced


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks wan", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small images, short windows (~1 min)")
    p.add_argument("--mbit", type=float, default=200.0, help="the uplink's rate (Mbit/s)")
    p.add_argument("--rtt-ms", type=float, default=40.0, help="the uplink's round trip (ms)")
    p.add_argument("--queue", default="100ms", help="tbf latency: the link's queue (100ms)")
    p.add_argument("--boot-size", help="the booted image (256MiB; quick 32MiB)")
    p.add_argument("--warm-size", help="each warmed image (512MiB; quick 64MiB)")
    p.add_argument("--warm-images", type=int, default=4, help="images warmed at once (4)")
    p.add_argument("--kill-size", help="the image killed mid-fill (1GiB; quick 128MiB)")
    p.add_argument("--lead-in", type=float, help="seconds of warm before measuring (3; 1.5)")
    p.add_argument("--window", type=float, help="seconds the warm's rate is measured (20; 5)")
    p.add_argument("--boot-share", type=float, default=0.9, help="max_rate for boots / link")
    p.add_argument("--modes", default="off,on", help="budget off, on, or both (off,on)")
    p.add_argument("--no-kill", action="store_true", help="leave out the kill -9 run")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    return p


def plan_of(args: argparse.Namespace) -> dict[str, Any]:
    preset = QUICK if args.quick else FULL
    link = args.mbit * 1e6 / 8
    modes = args.modes.split(",")
    if not modes or any(mode not in ("off", "on") for mode in modes):
        raise ConfigError("--modes", f"expected off, on or off,on, got {args.modes!r}")
    return {
        "boot_size": parse_size(args.boot_size or preset["boot"], "--boot-size"),
        "warm_size": parse_size(args.warm_size or preset["warm"], "--warm-size"),
        "kill_size": parse_size(args.kill_size or preset["kill"], "--kill-size"),
        "warm_images": args.warm_images,
        "lead_in": args.lead_in or preset["lead_in"],
        "window": args.window or preset["window"],
        "boot_max_rate": int(link * args.boot_share),
        "half_rate": int(link / 2),
        "modes": modes,
        "kill": not args.no_kill,
        "port": EDGE_PORT,
    }


Cell = Callable[[str, dict[str, Any]], str]  # (mode, its results) -> the text of a cell


def report(plan: dict[str, Any], results: dict[str, Any], args: argparse.Namespace) -> str:
    mib, modes = 2**20, plan["modes"]

    def cap(key: str) -> Cell:
        return lambda mode, _: f"{plan[key] / 1e6:.2f}" if mode == "on" else "no cap"

    def seconds(run: str) -> Cell:
        return lambda _, found: f"{found[run]['seconds']:.1f}"

    def ratio(_: str, found: dict[str, Any]) -> str:
        during, alone = found["boot_during_warm"], found["boot_alone"]
        return f"{during['seconds'] / alone['seconds']:.2f}x"

    def warm_rate(key: str) -> Cell:
        return lambda _, found: f"{found['warm_rate'][key] / 1e6:.2f}"

    def against_setting(mode: str, found: dict[str, Any]) -> str:
        measured = found["warm_rate"]["bytes_per_second"]
        return f"{measured / plan['half_rate'] - 1:+.1%}" if mode == "on" else "-"

    def other_load(_: str, found: dict[str, Any]) -> str:
        runs = ("boot_alone", "boot_during_warm", "warm_rate")
        return "/".join(f"{found[run]['other_load']:.1f}" for run in runs)

    rows: list[tuple[str, Cell, str]] = [
        ("max_rate for the boots (MB/s)", cap("boot_max_rate"), ""),
        ("boot alone (s)", seconds("boot_alone"), ""),
        ("boot during the warm (s)", seconds("boot_during_warm"), ""),
        ("  during / alone", ratio, "<= 1.2x"),
        (
            "  MB the warm took meanwhile",
            lambda _, found: f"{found['boot_during_warm']['warm_bytes_meanwhile'] / 1e6:.0f}",
            "",
        ),
        ("max_rate for the warm (MB/s)", cap("half_rate"), ""),
        ("uplink rate during the warm (MB/s)", warm_rate("bytes_per_second"), ""),
        ("  against max_rate", against_setting, "within 5%"),
        ("  the link, headers included (MB/s)", warm_rate("link_bytes_per_second"), ""),
        ("other load, cores (boot/warm/rate runs)", other_load, ""),
    ]
    lines = [
        f"wan scenario: {args.mbit:g} Mbit/s, {args.rtt_ms:g} ms RTT, queue {args.queue}; "
        f"boot {plan['boot_size'] / mib:.0f} MiB, warm {plan['warm_images']} x "
        f"{plan['warm_size'] / mib:.0f} MiB at once",
        f"{'':42}" + "".join(f"{'budget ' + mode:>14}" for mode in modes) + "   target",
    ]
    for label, cell, target in rows:
        texts = "".join(f"{cell(mode, results[mode]):>14}" for mode in modes)
        lines.append(f"{label:42}{texts}   {target}".rstrip())
    if "kill" in results:
        kill = results["kill"]
        lines += [
            f"kill -9 at {kill['killed_at']:.0%} of a cold {plan['kill_size'] / mib:.0f} MiB "
            f"fill (no cap), restart, finish: {kill['taken_over_image']:.2f}x the image taken "
            f"from the region (target <= 1.25x; the link: {kill['link_over_image']:.2f}x)",
            f"  the region's data GETs (their Range): {kill['region_data_requests']}; other "
            f"load {kill['other_load']:.1f} cores",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = plan_of(args)
    except ConfigError as exc:
        print(f"benchmarks wan: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("benchmarks wan: run as root (it makes network namespaces)", file=sys.stderr)
        return 2
    started, load_before = time.monotonic(), os.getloadavg()
    with ExitStack() as exits:
        workdir = Path(tempfile.mkdtemp(prefix="bench-wan-", dir="/tmp"))
        exits.callback(shutil.rmtree, workdir, ignore_errors=True)
        wan, processes = exits.enter_context(shaped_wan(args, workdir))
        sizes = sorted({plan["boot_size"], plan["warm_size"], plan["kill_size"]})
        region = start_region(processes, workdir, sizes)
        plan.update(
            region=f"http://{REGION_ADDRESS}:{region['port']}",
            xxh3={size: digests["xxh3"] for size, digests in region["digests"].items()},
            workdir=str(workdir),
            pids=processes.pids(),
        )
        (workdir / "plan.json").write_text(json.dumps(plan))
        print(f"[{time.monotonic() - started:5.0f}s] network and region ready", flush=True)
        edge = subprocess.run(
            ["ip", "netns", "exec", wan.ns("edge"), sys.executable, "-m",
             "benchmarks.wan_edge", str(workdir / "plan.json")],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )  # fmt: skip
        if edge.returncode != 0:
            print("benchmarks wan: the edge side failed", file=sys.stderr)
            for log in sorted(workdir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            return 1
        results = json.loads(edge.stdout)
    elapsed = time.monotonic() - started
    print(report(plan, results, args))
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": elapsed,
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "arguments": {key: str(value) for key, value in vars(args).items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "plan": plan, "results": results}, indent=2))
    after = os.getloadavg()[0]
    print(
        f"\nresults: {args.out}  ({elapsed:.0f}s in all; load average before "
        f"{load_before[0]:.1f}, after {after:.1f}, on {os.cpu_count()} cores)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
