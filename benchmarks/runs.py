"""One measured run: wait for a quiet machine, start the clients together, account for CPU.

A run hands its jobs to the client workers with a common start time, and measures around
them what the contender's own processes spent (CPU, and edgecache's peak RSS) and how busy
the rest of the machine was, since on 2 shared cores a neighbour distorts every figure.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from benchmarks.clients import AUTH, ClientPool, Done, Job, LoopTally, StreamJob, Transfer, split
from benchmarks.procstat import OtherLoad, cpu_seconds, peak_rss_bytes, reset_peak_rss
from benchmarks.services import UNVERIFIED
from benchmarks.settings import Settings
from benchmarks.stack import EDGECACHE, Contender, Stack

GiB = 1 << 30
MiB = 1 << 20
_START_DELAY = 0.4  # lets every worker set up its session before the common start time
_HIT_WAIT = 10.0  # seconds a freshly filled cache may take before it answers with a hit
_QUIET_LOAD = 0.2  # cores used by other processes below which a run may start
_QUIET_SAMPLE = 0.5

Jobs = Callable[[float], list[Job]]  # the jobs of one run, given their common start time


@dataclass
class Bench:
    """What every scenario needs: the servers, the clients, and where problems are reported."""

    settings: Settings
    stack: Stack
    clients: ClientPool
    log: Callable[[str], None]
    profile: Callable[[str], AbstractContextManager[object]] = lambda _: nullcontext()
    failures: list[str] = field(default_factory=list)
    hot_image: str | None = None  # an image every cache holds, once one was primed
    tls: bool = False  # measure the contenders over HTTPS

    @property
    def contenders(self) -> list[Contender]:
        return self.stack.tls_contenders if self.tls else self.stack.contenders

    def fail(self, where: str, contender: str, problem: str) -> None:
        message = f"{where}/{contender}: {problem}"
        self.failures.append(message)
        self.log(f"  FAILED {message}")

    def schedule(self) -> Iterator[tuple[int, Contender]]:
        """(repetition, contender) in alternating order, rotated each repetition."""
        everyone = self.contenders
        for rep in range(self.settings.repetitions):
            shift = rep % len(everyone)
            for contender in everyone[shift:] + everyone[:shift]:
                yield rep, contender


@dataclass(frozen=True)
class Usage:
    """What the contender's own processes spent during one run."""

    cpu: float
    peak_rss: int | None  # edgecache's VmHWM during the run
    other_load: float  # cores busy with anything but the benchmark's processes, on average


def run_jobs(bench: Bench, contender: Contender, jobs: Jobs) -> tuple[list[Done], Usage, float]:
    """Run the jobs; return the workers' answers, the contender's usage and the start time."""
    processes = contender.processes()
    ours = [*bench.stack.processes(), *bench.clients.pids, os.getpid()]
    _await_quiet(bench, ours)
    if contender.name == EDGECACHE:
        reset_peak_rss(contender.pid)
    cpu_before = cpu_seconds(processes)
    other = OtherLoad(ours)
    start_at = time.monotonic() + _START_DELAY
    done = bench.clients.run(jobs(start_at))
    cpu = cpu_seconds(processes) - cpu_before
    peak = peak_rss_bytes(contender.pid) if contender.name == EDGECACHE else None
    bench.stack.check()
    return done, Usage(cpu, peak, other.cores()), start_at


def _await_quiet(bench: Bench, ours: list[int]) -> None:
    """Wait a while for other processes (another job on a shared machine) to leave the CPUs.

    Runs that could not wait it out show it in their "other processes' load" figure.
    """
    if bench.settings.quiet_wait <= 0:
        return
    deadline = time.monotonic() + bench.settings.quiet_wait
    while True:
        meter = OtherLoad(ours)
        time.sleep(_QUIET_SAMPLE)
        load = meter.cores()
        if load < _QUIET_LOAD:
            return
        if time.monotonic() > deadline:
            bench.log(f"  the machine is still busy ({load:.2f} other cores); measuring anyway")
            return


@dataclass(frozen=True)
class StreamRun:
    """Concurrent full downloads that all started at `start_at`."""

    transfers: list[Transfer]
    start_at: float
    usage: Usage
    client_busy: float  # the busiest client process's share of one core

    @property
    def size(self) -> int:
        return sum(transfer.size for transfer in self.transfers)

    @property
    def elapsed(self) -> float:
        return max(transfer.done_at for transfer in self.transfers) - self.start_at

    @property
    def throughput(self) -> float:
        """GB/s (10^9 bytes) over all streams."""
        return self.size / self.elapsed / 1e9

    @property
    def cpu_per_gib(self) -> float:
        return self.usage.cpu / (self.size / GiB) if self.size else 0.0

    @property
    def first_bytes(self) -> list[float]:
        """Seconds from the start to each client's first body byte, earliest first."""
        return sorted(transfer.first_byte_at - self.start_at for transfer in self.transfers)

    def record(self, contender: Contender, rep: int, **extra: Any) -> dict[str, Any]:
        return {
            "contender": contender.name,
            "repetition": rep,
            "streams": len(self.transfers),
            "bytes": self.size,
            "seconds": round(self.elapsed, 4),
            "throughput_gbps": round(self.throughput, 4),
            "server_cpu_s": round(self.usage.cpu, 3),
            "edgecache_peak_rss": self.usage.peak_rss,
            "client_busy": round(self.client_busy, 3),
            "other_load": round(self.usage.other_load, 3),
            "sources": dict(Counter(transfer.source for transfer in self.transfers)),
            **extra,
        }


def stream_run(
    bench: Bench, contender: Contender, image: str, size: int, streams: int, verify: bool
) -> StreamRun:
    """`streams` simultaneous downloads of the image, bytes checked when `verify`."""
    digest = bench.stack.digests[size].xxh3 if verify else None
    url = contender.image_url(image, "/file")

    def jobs(start_at: float) -> list[Job]:
        return [
            StreamJob(url, share, start_at, size, digest, contender.source_header)
            for share in split(streams, bench.clients.size)
        ]

    done, usage, start_at = run_jobs(bench, contender, jobs)
    transfers = [transfer for answer in done for transfer in _transfers(answer)]
    return StreamRun(transfers, start_at, usage, max(answer.busy for answer in done))


@dataclass(frozen=True)
class LoopRun:
    """Request loops that ran for a fixed time."""

    tallies: list[LoopTally]
    seconds: float
    usage: Usage
    client_busy: float

    @property
    def requests(self) -> int:
        return sum(tally.requests for tally in self.tallies)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_ms_per_request(self) -> float:
        return self.usage.cpu * 1000 / max(1, self.requests)

    @property
    def sources(self) -> Counter[str]:
        seen: Counter[str] = Counter()
        for tally in self.tallies:
            seen.update(tally.sources)
        return seen

    @property
    def errors(self) -> list[str]:
        return [error for tally in self.tallies for error in tally.errors]

    def record(self, contender: Contender, rep: int) -> dict[str, Any]:
        return {
            "contender": contender.name,
            "repetition": rep,
            "requests": self.requests,
            "errors": sum(tally.error_count for tally in self.tallies),
            "seconds": round(self.seconds, 4),
            "bytes": sum(tally.size for tally in self.tallies),
            "server_cpu_s": round(self.usage.cpu, 3),
            "edgecache_peak_rss": self.usage.peak_rss,
            "client_busy": round(self.client_busy, 3),
            "other_load": round(self.usage.other_load, 3),
            "sources": dict(self.sources),
        }


def loop_run(bench: Bench, contender: Contender, jobs: Jobs) -> LoopRun:
    done, usage, _ = run_jobs(bench, contender, jobs)
    tallies = [answer.result for answer in done if isinstance(answer.result, LoopTally)]
    seconds = max(answer.active for answer in done)
    return LoopRun(tallies, seconds, usage, max(answer.busy for answer in done))


def _transfers(answer: Done) -> list[Transfer]:
    if not isinstance(answer.result, list):
        raise TypeError("a stream job answered with a loop tally")
    return answer.result


def await_hit(bench: Bench, contender: Contender, image: str) -> None:
    """Wait until a one-byte Range read of the image is a hit (a no-op without a cache)."""
    if not contender.hit:
        return
    deadline = time.monotonic() + _HIT_WAIT
    seen = ""
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            contender.image_url(image, "/file"), headers={**AUTH, "Range": "bytes=0-0"}
        )
        with urllib.request.urlopen(request, timeout=10, context=UNVERIFIED) as answer:
            answer.read()
            seen = answer.headers.get(contender.source_header, "")
        if seen == contender.hit:
            return
        time.sleep(0.1)
    bench.fail("prime", contender.name, f"no cache hit after filling (source {seen!r})")


def size_text(size: int) -> str:
    if size >= GiB and size % GiB == 0:
        return f"{size // GiB} GiB"
    return f"{size / MiB:g} MiB"
