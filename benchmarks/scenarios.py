"""The measurements: what each scenario asks of every contender, and the figures it keeps.

Contenders alternate run by run (the order rotates each repetition) so that slow drift of the
machine (page cache, writeback) spreads over all of them. The first repetition of every
scenario verifies what each contender returned (whole-body xxh3, or each Range piece against
the source file); later repetitions only count bytes, so verifying costs them no client CPU.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from typing import Any

from benchmarks.clients import TOKEN, Job, MetadataJob, RangeJob, Transfer, split
from benchmarks.procstat import RssSampler
from benchmarks.results import Metric, ScenarioResult
from benchmarks.runs import (
    Bench,
    LoopRun,
    MiB,
    StreamRun,
    await_hit,
    loop_run,
    size_text,
    stream_run,
)
from benchmarks.stack import EDGECACHE, Contender


def hot_image(bench: Bench) -> str:
    """An image every cache holds: read through each contender once, bytes verified."""
    if bench.hot_image is None:
        size = bench.settings.image_size
        image = bench.stack.new_image(size)
        bench.log(f"priming the caches with a {size_text(size)} image")
        for contender in bench.contenders:
            run = stream_run(bench, contender, image, size, 1, verify=True)
            _check(bench, "prime", contender, run.transfers)
            await_hit(bench, contender, image)
        bench.hot_image = image
    return bench.hot_image


def hit(bench: Bench, streams: int) -> ScenarioResult:
    """Throughput of `streams` concurrent downloads of an image the caches already hold."""
    size = bench.settings.image_size
    image = hot_image(bench)
    result = ScenarioResult(
        _tls_key(bench, f"hit-{streams}"),
        f"cache hit, {streams} stream{'s' if streams > 1 else ''} of {size_text(size)}"
        + _tls_title(bench),
        _throughput_metrics(),
    )
    bench.log(result.title)
    with bench.profile(result.key):
        for rep, contender in bench.schedule():
            run = stream_run(bench, contender, image, size, streams, verify=rep == 0)
            _check(bench, result.key, contender, run.transfers, contender.hit, result)
            _add_throughput(result, contender, rep, run)
    return result


def cold(bench: Bench) -> ScenarioResult:
    """One client downloading an image no cache holds yet (a new image id every run)."""
    size = bench.settings.image_size
    result = ScenarioResult(
        _tls_key(bench, "cold"),
        f"cold fill, 1 client, {size_text(size)}" + _tls_title(bench),
        _throughput_metrics(),
    )
    bench.log(result.title)
    with bench.profile(result.key):
        for rep, contender in bench.schedule():
            image = bench.stack.new_image(size)
            run = stream_run(bench, contender, image, size, 1, verify=rep == 0)
            _check(bench, result.key, contender, run.transfers, contender.miss, result)
            gets = bench.stack.data_gets(image)
            _add_throughput(result, contender, rep, run, upstream_gets=gets)
    return result


def coalesce(bench: Bench) -> ScenarioResult:
    """Many clients asking for the same cold image at the same moment."""
    size, clients = bench.settings.coalesce_size, bench.settings.coalesce_clients
    result = ScenarioResult(
        "coalesce",
        f"coalescing, {clients} clients start one cold {size_text(size)} image at once",
        [
            Metric("gets", "upstream data GETs", "", "lower"),
            Metric("checks", "upstream download checks (1-byte GETs)", "", "lower"),
            Metric("ttfb_first", "first byte, first client", "ms", "lower"),
            Metric("ttfb_last", "first byte, slowest client", "ms", "lower"),
            Metric("ttfb_spread", "slowest - first first byte", "ms", "lower"),
            Metric("total", "total time", "s", "lower"),
            *_load_metrics(),
        ],
    )
    bench.log(result.title)
    with bench.profile(result.key):
        for rep, contender in bench.schedule():
            image = bench.stack.new_image(size)
            run = stream_run(bench, contender, image, size, clients, verify=rep == 0)
            _check(bench, result.key, contender, run.transfers)
            gets = bench.stack.data_gets(image)
            checks = bench.stack.download_checks(image)
            _add_coalescing(result, contender, rep, run, gets, checks)
    return result


def _add_coalescing(
    result: ScenarioResult, contender: Contender, rep: int, run: StreamRun, gets: int, checks: int
) -> None:
    first, slowest = run.first_bytes[0], run.first_bytes[-1]
    figures = {
        "gets": gets,
        "checks": checks,
        "ttfb_first": first * 1000,
        "ttfb_last": slowest * 1000,
        "ttfb_spread": (slowest - first) * 1000,
        "total": run.elapsed,
        "client": run.client_busy,
        "other": run.usage.other_load,
    }
    for key, value in figures.items():
        result.metric(key).add(contender.name, value)
    result.runs.append(run.record(contender, rep, upstream_gets=gets, first_byte_s=run.first_bytes))


def ranges(bench: Bench) -> ScenarioResult:
    """Random-offset Range reads of a cached image."""
    settings = bench.settings
    return _loop_scenario(
        bench,
        "range",
        f"Range reads of {size_text(settings.range_piece)} at random offsets of a cached "
        f"image, concurrency {settings.concurrency}",
        _range_jobs,
        expect_hits=True,
    )


def _range_jobs(
    bench: Bench, image: str, contender: Contender, rep: int, start_at: float
) -> list[Job]:
    settings = bench.settings
    return [
        RangeJob(
            url=contender.image_url(image, "/file"),
            start_at=start_at,
            duration=settings.loop_seconds,
            concurrency=share,
            size=settings.image_size,
            piece=settings.range_piece,
            seed=rep * 100 + number,
            content=str(bench.stack.content) if rep == 0 else None,
            source_header=contender.source_header,
        )
        for number, share in enumerate(split(settings.concurrency, bench.clients.size))
    ]


def metadata(bench: Bench) -> ScenarioResult:
    """`GET /v2/images/{id}` of an image every contender has served before."""
    return _loop_scenario(
        bench,
        "metadata",
        f"image record GET /v2/images/{{id}}, concurrency {bench.settings.concurrency}",
        _metadata_jobs,
        expect_hits=False,
    )


def _metadata_jobs(
    bench: Bench, image: str, contender: Contender, rep: int, start_at: float
) -> list[Job]:
    settings = bench.settings
    return [
        MetadataJob(
            url=contender.image_url(image),
            start_at=start_at,
            duration=settings.loop_seconds,
            concurrency=share,
            image_id=image if rep == 0 else None,
        )
        for share in split(settings.concurrency, bench.clients.size)
    ]


LoopJobs = Callable[[Bench, str, Contender, int, float], list[Job]]


def _loop_scenario(
    bench: Bench, key: str, title: str, make_jobs: LoopJobs, *, expect_hits: bool
) -> ScenarioResult:
    """Request loops against the hot image, each contender in turn: requests per second."""
    image = hot_image(bench)
    result = ScenarioResult(key, title, _loop_metrics())
    bench.log(result.title)
    with bench.profile(result.key):
        for rep, contender in bench.schedule():
            run = loop_run(bench, contender, partial(make_jobs, bench, image, contender, rep))
            _add_loop(bench, result, contender, rep, run, expect_hits=expect_hits)
    return result


def memory(bench: Bench) -> ScenarioResult:
    """edgecache's peak RSS and CPU per GiB with many streams of a large image, cold then hot."""
    size, streams = bench.settings.large_size, bench.settings.large_streams
    edgecache = next(c for c in bench.stack.contenders if c.name == EDGECACHE)
    result = ScenarioResult(
        "rss",
        f"edgecache memory and CPU, {streams} streams of {size_text(size)}: cold (one fill, "
        f"{streams - 1} followers), then all hits",
        [
            Metric("rss_cold", "peak RSS, cold (VmHWM)", "MiB", "lower"),
            Metric("rss_hit", "peak RSS, hits (VmHWM)", "MiB", "lower"),
            Metric("sampled", "peak RSS, sampled VmRSS, both", "MiB", "lower"),
            Metric("cpu_cold", "CPU per GiB served, cold", "s/GiB", "lower"),
            Metric("cpu_hit", "CPU per GiB served, hits", "s/GiB", "lower"),
            Metric("tp_cold", "throughput, cold", "GB/s", "higher"),
            Metric("tp_hit", "throughput, hits", "GB/s", "higher"),
            Metric("other", "other load, busier phase (cores)", ""),
        ],
    )
    bench.log(result.title)
    image = bench.stack.new_image(size)
    other_load = 0.0
    with RssSampler(edgecache.pid) as sampler, bench.profile(result.key):
        for phase in ("cold", "hit"):
            run = stream_run(bench, edgecache, image, size, streams, verify=phase == "cold")
            _check(bench, f"{result.key}-{phase}", edgecache, run.transfers)
            assert run.usage.peak_rss is not None
            result.metric(f"rss_{phase}").add(EDGECACHE, run.usage.peak_rss / MiB)
            result.metric(f"cpu_{phase}").add(EDGECACHE, run.cpu_per_gib)
            result.metric(f"tp_{phase}").add(EDGECACHE, run.throughput)
            other_load = max(other_load, run.usage.other_load)
            result.runs.append(run.record(edgecache, 0, phase=phase))
    result.metric("sampled").add(EDGECACHE, sampler.peak / MiB)
    result.metric("other").add(EDGECACHE, other_load)
    return result


def many_fills(bench: Bench) -> ScenarioResult:
    """edgecache's peak RSS while `edgecache warm --parallel 8` fills eight cold images and
    32 streams read a hot one: the bytes all fills hold share one budget (`fill_memory`)."""
    size, parallel, streams = bench.settings.image_size, 8, bench.settings.large_streams
    edgecache = next(c for c in bench.stack.contenders if c.name == EDGECACHE)
    result = ScenarioResult(
        "fills",
        f"edgecache memory, warm --parallel {parallel} of {parallel} cold "
        f"{size_text(size)} images while {streams} streams hit another",
        [
            Metric("sampled", "peak RSS, sampled VmRSS", "MiB", "lower"),
            Metric("tp_hit", "throughput of the hits meanwhile", "GB/s", "higher"),
            Metric("warm", "warm run", "s", "lower"),
        ],
    )
    bench.log(result.title)
    hot = hot_image(bench)
    cold = [bench.stack.new_image(size) for _ in range(parallel)]
    warm_argv = [
        sys.executable, "-m", "edgecache", "warm", "--endpoint", edgecache.url,
        "--token", TOKEN, "--parallel", str(parallel), *cold,
    ]  # fmt: skip
    with RssSampler(edgecache.pid) as sampler, bench.profile(result.key):
        started = time.monotonic()
        warm = subprocess.Popen(warm_argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        run = stream_run(bench, edgecache, hot, size, streams, verify=False)
        _, errors = warm.communicate(timeout=1800)
        took = time.monotonic() - started
    _check(bench, result.key, edgecache, run.transfers)
    if warm.returncode != 0:
        raise RuntimeError(f"edgecache warm failed: {errors.decode(errors='replace')[-2000:]}")
    result.metric("sampled").add(EDGECACHE, sampler.peak / MiB)
    result.metric("tp_hit").add(EDGECACHE, run.throughput)
    result.metric("warm").add(EDGECACHE, took)
    result.runs.append(run.record(edgecache, 0, phase="hits during warm"))
    return result


def run_all(bench: Bench) -> Iterator[ScenarioResult]:
    """The selected scenarios' results, each as soon as it is complete."""
    wanted = bench.settings.scenarios
    plan: list[tuple[str, Callable[[], ScenarioResult]]] = [
        ("hit", lambda: hit(bench, 1)),
        ("hit", lambda: hit(bench, bench.settings.streams)),
        ("cold", lambda: cold(bench)),
        ("coalesce", lambda: coalesce(bench)),
        ("range", lambda: ranges(bench)),
        ("metadata", lambda: metadata(bench)),
        ("rss", lambda: memory(bench)),
        ("fills", lambda: many_fills(bench)),
    ]
    tls = replace(bench, tls=True, hot_image=None)
    plan += [
        ("tls", lambda: hit(tls, 1)),
        ("tls", lambda: hit(tls, bench.settings.streams)),
        ("tls", lambda: cold(tls)),
    ]
    for name, run in plan:
        if name in wanted:
            yield run()


def _tls_key(bench: Bench, key: str) -> str:
    return f"tls-{key}" if bench.tls else key


def _tls_title(bench: Bench) -> str:
    return ", over TLS (no direct: the upstream is plain HTTP)" if bench.tls else ""


def _load_metrics() -> list[Metric]:
    return [
        Metric("client", "client busy (of one core)", ""),
        Metric("other", "other processes' load (cores)", ""),
    ]


def _throughput_metrics() -> list[Metric]:
    return [
        Metric("throughput", "throughput", "GB/s", "higher"),
        Metric("cpu", "server CPU per GiB", "s/GiB", "lower"),
        *_load_metrics(),
    ]


def _add_throughput(
    result: ScenarioResult, contender: Contender, rep: int, run: StreamRun, **extra: Any
) -> None:
    result.metric("throughput").add(contender.name, run.throughput)
    result.metric("cpu").add(contender.name, run.cpu_per_gib)
    result.metric("client").add(contender.name, run.client_busy)
    result.metric("other").add(contender.name, run.usage.other_load)
    result.runs.append(run.record(contender, rep, **extra))


def _loop_metrics() -> list[Metric]:
    return [
        Metric("rate", "requests per second", "req/s", "higher"),
        Metric("cpu", "server CPU per request", "ms", "lower"),
        *_load_metrics(),
    ]


def _add_loop(
    bench: Bench,
    result: ScenarioResult,
    contender: Contender,
    rep: int,
    run: LoopRun,
    expect_hits: bool,
) -> None:
    for error in run.errors:
        bench.fail(result.key, contender.name, error)
    if expect_hits and set(run.sources) - {contender.hit}:
        result.warnings.append(
            f"{contender.name}: expected every answer from its cache, got {dict(run.sources)}"
        )
    result.metric("rate").add(contender.name, run.rate)
    result.metric("cpu").add(contender.name, run.cpu_ms_per_request)
    result.metric("client").add(contender.name, run.client_busy)
    result.metric("other").add(contender.name, run.usage.other_load)
    result.runs.append(run.record(contender, rep))


def _check(
    bench: Bench,
    where: str,
    contender: Contender,
    transfers: list[Transfer],
    source: str | None = None,
    result: ScenarioResult | None = None,
) -> None:
    """Wrong bytes or statuses are failures; an unexpected source is a caveat on the figure."""
    for transfer in transfers:
        if transfer.error is not None:
            bench.fail(where, contender.name, transfer.error)
    if source is None or result is None:
        return
    seen = Counter(transfer.source for transfer in transfers)
    if set(seen) != {source}:
        result.warnings.append(f"{contender.name}: expected source {source!r}, got {dict(seen)}")
