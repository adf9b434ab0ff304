"""`python -m benchmarks [--quick] [--out FILE]`: start everything, measure, report, clean up.

`python -m benchmarks zone [...]` runs the zone scenario instead (benchmarks/zone.py: three
nodes behind HAProxy in shaped network namespaces; needs root). `python -m benchmarks
rechecks [...]` measures what keeping cached images' records young costs Glance
(benchmarks/rechecks.py). `python -m benchmarks resume [...]` measures a kill -9 in the middle
of a cold fill, with and without kept partials (benchmarks/resume.py). `python -m benchmarks
wan [...]` puts one node behind a shaped, delayed uplink and measures boots against a warm,
the uplink budget and a fill killed midway (benchmarks/wan.py; needs root).

Exit status: 0 when every contender returned the right bytes and every process kept running
(speed is never judged here), 1 when something was broken, 2 for bad options, 130 on Ctrl-C.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from benchmarks import rechecks, resume, wan, zone
from benchmarks import stack as stack_module
from benchmarks.clients import ClientFailed, ClientPool
from benchmarks.profile import PySpy, hot_spots
from benchmarks.report import table, write_json
from benchmarks.results import ScenarioResult
from benchmarks.runs import Bench
from benchmarks.scenarios import run_all
from benchmarks.services import ServiceFailed
from benchmarks.settings import Settings, from_args, parser
from edgecache.config import ConfigError

EXIT_BROKEN = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["zone"]:
        return zone.main(arguments[1:])
    if arguments[:1] == ["rechecks"]:
        return rechecks.main(arguments[1:])
    if arguments[:1] == ["resume"]:
        return resume.main(arguments[1:])
    if arguments[:1] == ["wan"]:
        return wan.main(arguments[1:])
    try:
        settings = from_args(parser().parse_args(arguments))
    except ConfigError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return EXIT_USAGE
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    try:
        results, failures, meta = _run(settings, log)
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark started has been stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    print(table(results))
    write_json(settings.out, results, meta, failures)
    print(f"\nresults: {settings.out}  ({time.monotonic() - started:.0f}s in all)")
    if failures:
        print(f"\n{len(failures)} problem(s):", file=sys.stderr)
        for failure in failures:
            print(f"  {failure}", file=sys.stderr)
        return EXIT_BROKEN
    return 0


def _run(settings: Settings, log: Any) -> tuple[list[ScenarioResult], list[str], dict[str, Any]]:
    """Start the stack and the clients, run the scenarios, stop everything (on error too)."""
    results: list[ScenarioResult] = []
    with ExitStack() as exits:
        workdir = Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp"))
        if settings.keep:
            log(f"work directory (kept): {workdir}")
        else:
            exits.callback(shutil.rmtree, workdir, ignore_errors=True)
        servers = stack_module.start(
            workdir, settings.sizes, settings.nginx_workers, settings.edgecache_config, exits, log
        )
        log(
            f"synthetic glance {servers.upstream.url}, edgecache {servers.edgecache.url}, "
            f"nginx {servers.nginx.url}"
        )
        clients = ClientPool(settings.client_processes)
        exits.callback(clients.close)
        profiler = (
            PySpy(settings.py_spy, servers.edgecache.pid, settings.out.parent)
            if settings.py_spy
            else None
        )

        def profile(name: str) -> AbstractContextManager[object]:
            return profiler.record(name) if profiler else nullcontext()

        bench = Bench(settings, servers, clients, log, profile)
        try:
            for result in run_all(bench):
                results.append(result)
        except (ServiceFailed, ClientFailed) as exc:
            bench.failures.append(f"aborted: {exc}")
            log(f"ABORTED: {exc}")
        meta = _meta(settings, servers)
        if profiler is not None:
            _print_profiles(profiler)
    return results, bench.failures, meta


def _print_profiles(profiler: PySpy) -> None:
    for path in profiler.recorded:
        if not path.exists():
            print(f"\nprofile {path}: py-spy wrote nothing (see {path.with_suffix('.log')})")
            continue
        print(f"\nprofile {path}: where edgecache's busy samples were (self time)")
        for share, frame in hot_spots(path):
            print(f"  {share:6.1%}  {frame[:150]}")


def _meta(settings: Settings, servers: stack_module.Stack) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "edgecache_commit": _git("rev-parse", "HEAD"),
        "edgecache_dirty": bool(_git("status", "--porcelain", "--", "edgecache")),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": servers.nginx_version,
        "settings": {key: str(value) for key, value in asdict(settings).items()},
    }


def _git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=stack_module.REPO, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack, which stops every server


if __name__ == "__main__":
    sys.exit(main())
