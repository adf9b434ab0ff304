"""Upstream faults through the fault-injecting proxy: resets, stalls, 5xx bursts, truncated
bodies, wrong bytes and a slow trickle. Every client must end with the exact image or a failure
it can see (a broken transfer, an error status), never a short or wrong success; what reaches
the cache is always exact."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import statistics
import time
from pathlib import Path

import pytest

from edgecache.appkeys import CACHE, UPSTREAM
from tests.conftest import EdgecacheFactory, MiB
from tests.fakeglance import FakeGlance, FakeImage
from tests.reliability.conftest import Reporter
from tests.reliability.faultproxy import BEFORE_RESPONSE, Fault, FaultProxy, always
from tests.reliability.helpers import (
    Edge,
    Outcome,
    Tally,
    app_of,
    download,
    open_files_under,
    partial_files,
    scrape,
    wrong_bytes,
)

# Small timeouts so that faults show quickly; the probe runs often so the uplink comes back soon.
FAST = {
    "read_timeout": 1.0,
    "connect_timeout": 1.0,
    "stall_timeout": 1.5,
    "probe_interval": 0.1,
    "failures_to_offline": 2,
}


async def behind_proxy(
    make_edgecache: EdgecacheFactory, proxy: FaultProxy, **overrides: object
) -> Edge:
    return await make_edgecache(upstream=proxy.url, **{**FAST, **overrides})


def url(edge: Edge, image: FakeImage) -> str:
    return str(edge.make_url(f"/v2/images/{image.id}/file"))


async def fetch_all(edge: Edge, image: FakeImage, token: str, clients: int) -> list[Outcome]:
    headers = {"X-Auth-Token": token}
    return list(
        await asyncio.gather(
            *(download(edge.session, url(edge, image), image.data, headers) for _ in range(clients))
        )
    )


async def resumes(edge: Edge) -> float:
    return (await scrape(edge.session, str(edge.make_url("")).rstrip("/"))).get(
        "edgecache_fill_resumes_total", 0.0
    )


async def cached_exactly(edge: Edge, image: FakeImage) -> bool | None:
    """True if the image is committed with exactly its bytes, None if not cached, else False."""
    cache = app_of(edge)[CACHE]
    entry = await cache.index.get(image.id)
    if entry is None:
        return None
    return bool(cache.store.blob_path(image.id).read_bytes() == image.data)


class Trials:
    """Runs seeded trials of one fault kind and keeps what each one showed."""

    def __init__(self, figures: Reporter, kind: str) -> None:
        self.figures = figures
        self.kind = kind
        self.tally = Tally()
        self.failed: list[str] = []
        self.seeds: list[int] = []
        self.run = 0
        self._resumes_at_start = 0.0

    async def count_resumes_from_now(self, edge: Edge) -> None:
        self._resumes_at_start = await resumes(edge)

    async def resumed(self, edge: Edge) -> float:
        """Fill resumes since count_resumes_from_now (from /metrics), added to the figures."""
        count = await resumes(edge) - self._resumes_at_start
        self.figures.add("resumes", count)
        return count

    def finish_trial(self, trial_seed: int, problems: list[str]) -> None:
        self.run += 1
        self.seeds.append(trial_seed)
        self.figures.add("fault_trials")
        if problems:
            self.failed.append(f"seed {trial_seed}: " + "; ".join(problems))
        else:
            self.figures.add("fault_trials_survived")

    def judge(
        self, trial_seed: int, image: FakeImage, outcomes: list[Outcome], problems: list[str]
    ) -> None:
        for number, outcome in enumerate(outcomes):
            self.tally.add(outcome, f"seed {trial_seed} client {number}")
            if not outcome.acceptable:
                problems.append(f"client {number} ended {outcome.kind} ({outcome.error})")
            self.figures.add("corrupt_bytes_served", wrong_bytes(outcome, image.data))

    async def examine(
        self,
        proxy: FaultProxy,
        edge: Edge,
        cache_dir: Path,
        trial_seed: int,
        image: FakeImage,
        outcomes: list[Outcome],
    ) -> list[str]:
        """After a trial's downloads: stop its faults, check the store, judge the clients."""
        proxy.script.clear(image.id)
        problems = await check_store(edge, cache_dir, image)
        self.judge(trial_seed, image, outcomes, problems)
        return problems

    def report(self, extra: str = "") -> None:
        seeds = f"{self.seeds[0]}..{self.seeds[-1]}" if self.seeds else "-"
        self.figures.note(
            f"{self.kind}: {self.run} trials (seeds {seeds}), failed {len(self.failed)}; "
            f"client outcomes {dict(self.tally.kinds)}{'; ' + extra if extra else ''}"
        )


def close_at(offset: int) -> Fault:
    return Fault(close_at=offset)


def shorten_to(offset: int) -> Fault:
    return Fault(shorten_to=offset)


def expect_all(outcomes: list[Outcome], kind: str, problems: list[str]) -> None:
    if any(o.kind != kind for o in outcomes):
        problems.append(f"expected every client to end {kind}: {[o.kind for o in outcomes]}")


async def check_store(edge: Edge, cache_dir: Path, image: FakeImage) -> list[str]:
    problems: list[str] = []
    if partial_files(cache_dir):
        problems.append(f"partial files left: {partial_files(cache_dir)}")
    if await cached_exactly(edge, image) is False:
        problems.append("the committed copy differs from the image")
    return problems


async def test_connection_resets_at_random_offsets(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    """>= 50 seeded trials: RSTs at random offsets (headers included) of the image stream, 0-3
    per fill, 1-3 concurrent clients; every 15th trial resets every resumed stream at once, so
    the fill can only fail. Resumes are read from /metrics."""
    token = glance.add_project("p1")
    edge = await behind_proxy(make_edgecache, proxy)
    uplink = app_of(edge)[UPSTREAM].uplink
    trials = Trials(figures, "connection resets")
    await trials.count_resumes_from_now(edge)
    exact_clients = clients_total = 0
    for trial in range(60):
        trial_seed = seed + trial
        rng = random.Random(trial_seed)
        size = rng.randrange(1, 3 * MiB // 2)
        image = glance.add_image(rng.randbytes(size), owner="p1")
        hopeless = trial % 15 == 14
        resets = [
            BEFORE_RESPONSE if rng.random() < 0.15 else rng.randrange(size)
            for _ in range(1 if hopeless else rng.choice((0, 1, 1, 2, 3)))
        ]
        proxy.script.queue(image.id, *(Fault(reset_at=offset) for offset in resets))
        if hopeless:
            proxy.script.repeat(image.id, always(Fault(reset_at=0)))
        assert await uplink.wait_online(10)
        clients = rng.randint(1, 3)
        outcomes = await fetch_all(edge, image, token, clients)
        problems = await trials.examine(proxy, edge, cache_dir, trial_seed, image, outcomes)
        exact = sum(o.kind == "exact" for o in outcomes)
        if hopeless:
            if exact or await cached_exactly(edge, image) is not None:
                problems.append("a fill whose stream never resumed completed")
        else:
            exact_clients += exact
            clients_total += clients
        trials.finish_trial(trial_seed, problems)
    resumed = await trials.resumed(edge)
    trials.report(f"RSTs injected {proxy.stats['reset']}, resumes {resumed:.0f}")
    assert not trials.failed, "\n".join(trials.failed)
    assert resumed > 0
    # Resuming must actually work: most clients of fills that could finish got the image.
    assert exact_clients >= 0.8 * clients_total, trials.tally.kinds


async def test_stalled_upstream_fires_read_timeouts_and_uplink_state_follows(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    cached = glance.add_image(os.urandom(MiB), owner="p1")
    cold = glance.add_image(os.urandom(MiB), owner="p1")
    edge = await behind_proxy(make_edgecache, proxy, read_timeout=0.5)
    uplink = app_of(edge)[UPSTREAM].uplink
    assert (await download(edge.session, url(edge, cached), cached.data, headers)).kind == "exact"
    async with edge.get(f"/v2/images/{cold.id}", headers=headers) as resp:
        assert resp.status == 200  # its record is known; its data is not cached

    proxy.script.everything = Fault(stall_at=BEFORE_RESPONSE)  # Glance accepts, never answers
    started = time.monotonic()
    answers: list[int] = []
    while uplink.online and len(answers) < 10:
        async with edge.get(f"/v2/images/{cached.id}", headers=headers) as resp:
            answers.append(resp.status)  # each waits out read_timeout, then is recalled
    assert await uplink.wait_offline(within=10)
    to_offline = time.monotonic() - started
    async with edge.get("/healthz") as resp:
        assert (await resp.json())["uplink"] == "down"
    hit = await download(edge.session, url(edge, cached), cached.data, headers)
    assert (hit.kind, hit.source) == ("exact", "cache")
    async with edge.get(f"/v2/images/{cold.id}/file", headers=headers) as resp:
        assert resp.status == 503
        assert "Retry-After" in resp.headers

    proxy.script.everything = None
    proxy.release_stalls()
    started = time.monotonic()
    assert await uplink.wait_online(within=10)
    to_online = time.monotonic() - started
    async with edge.get("/healthz") as resp:
        assert (await resp.json())["uplink"] == "up"
    fill = await download(edge.session, url(edge, cold), cold.data, headers)
    assert fill.kind == "exact"
    assert all(status == 200 for status in answers), answers
    figures.add("fault_trials")
    figures.add("fault_trials_survived")
    figures.note(
        f"silent upstream (read_timeout 0.5s): {len(answers)} metadata requests, offline after "
        f"{to_offline:.2f}s, back {to_online:.2f}s after it answered; healthz followed"
    )


async def test_stall_mid_body_resumes_or_fails_visibly(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    edge = await behind_proxy(make_edgecache, proxy, read_timeout=0.4)
    trials = Trials(figures, "stalls mid-body")
    await trials.count_resumes_from_now(edge)
    durations: list[float] = []
    for trial in range(6):
        trial_seed = seed + 1000 + trial
        rng = random.Random(trial_seed)
        size = rng.randrange(64 * 1024, MiB)
        image = glance.add_image(rng.randbytes(size), owner="p1")
        hopeless = trial == 5
        proxy.script.queue(image.id, Fault(stall_at=rng.randrange(size)))
        if hopeless:
            proxy.script.repeat(image.id, always(Fault(stall_at=0)))
        started = time.monotonic()
        outcomes = await fetch_all(edge, image, token, rng.randint(1, 2))
        durations.append(time.monotonic() - started)
        proxy.script.clear(image.id)
        proxy.release_stalls()
        problems = await check_store(edge, cache_dir, image)
        trials.judge(trial_seed, image, outcomes, problems)
        expect_all(outcomes, "transfer_error" if hopeless else "exact", problems)
        trials.finish_trial(trial_seed, problems)
    resumed = await trials.resumed(edge)
    trials.report(
        f"stalls {proxy.stats['stall']}, resumes {resumed:.0f}, "
        f"trial times {', '.join(f'{d:.1f}s' for d in durations)}"
    )
    assert not trials.failed, "\n".join(trials.failed)
    assert resumed >= 5


async def test_5xx_bursts(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    # (a burst of four 5xx and the backoff between them take ~1.5 s without a byte arriving)
    edge = await behind_proxy(make_edgecache, proxy, stall_timeout=3.0)
    uplink = app_of(edge)[UPSTREAM].uplink
    trials = Trials(figures, "5xx bursts")
    await trials.count_resumes_from_now(edge)
    for trial in range(10):
        trial_seed = seed + 2000 + trial
        rng = random.Random(trial_seed)
        image = glance.add_image(rng.randbytes(rng.randrange(1, MiB)), owner="p1")
        hopeless = trial == 9
        burst = [Fault(status=rng.choice((500, 502, 503, 504))) for _ in range(rng.randint(1, 4))]
        proxy.script.queue(image.id, *burst)
        if hopeless:
            proxy.script.repeat(image.id, always(Fault(status=503)))
        assert await uplink.wait_online(10)
        outcomes = await fetch_all(edge, image, token, rng.randint(1, 2))
        problems = await trials.examine(proxy, edge, cache_dir, trial_seed, image, outcomes)
        if hopeless and any(o.kind == "exact" for o in outcomes):
            problems.append("an endless burst still delivered the image")
        if not hopeless and not any(o.kind == "exact" for o in outcomes):
            problems.append(f"a short burst was not ridden out: {[o.kind for o in outcomes]}")
        if hopeless:  # once Glance answers again, the image comes through
            assert await uplink.wait_online(10)
            after = await download(edge.session, url(edge, image), image.data, headers)
            if after.kind != "exact":
                problems.append(f"after the burst: {after.kind}")
        trials.finish_trial(trial_seed, problems)

    # 502/503/504 on a cached image's record: the remembered record answers, data from disk.
    cached = glance.add_image(os.urandom(MiB), owner="p1")
    assert (await download(edge.session, url(edge, cached), cached.data, headers)).kind == "exact"
    for status in (502, 503, 504):
        assert await uplink.wait_online(10)
        proxy.script.metadata[cached.id] = [Fault(status=status)]
        hit = await download(edge.session, url(edge, cached), cached.data, headers)
        trials.judge(seed, cached, [hit], [])
        assert (hit.kind, hit.source) == ("exact", "cache"), (status, hit)
    resumed = await trials.resumed(edge)
    trials.report(f"5xx injected {proxy.stats['status']}, resumes {resumed:.0f}")
    assert not trials.failed, "\n".join(trials.failed)


async def test_truncated_bodies(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    """The upstream closes early (FIN mid-body), or sends a response that looks complete but is
    short (Content-Length rewritten): resumed from where it stopped, or a visible failure."""
    token = glance.add_project("p1")
    edge = await behind_proxy(make_edgecache, proxy)
    uplink = app_of(edge)[UPSTREAM].uplink
    trials = Trials(figures, "truncated bodies")
    await trials.count_resumes_from_now(edge)
    for trial in range(16):
        trial_seed = seed + 3000 + trial
        rng = random.Random(trial_seed)
        size = rng.randrange(2, 3 * MiB // 2)
        image = glance.add_image(rng.randbytes(size), owner="p1")
        cut = close_at if trial % 2 else shorten_to
        hopeless = trial in (7, 14)
        # (a cut beyond what is left of a resumed body never fires: a hopeless trial queues
        # one cut, then every resumed stream is cut before its first byte)
        cuts = 1 if hopeless else rng.randint(1, 3)
        proxy.script.queue(image.id, *(cut(rng.randrange(size)) for _ in range(cuts)))
        if hopeless:
            proxy.script.repeat(image.id, always(cut(0)))
        assert await uplink.wait_online(10)
        outcomes = await fetch_all(edge, image, token, rng.randint(1, 3))
        problems = await trials.examine(proxy, edge, cache_dir, trial_seed, image, outcomes)
        expect_all(outcomes, "transfer_error" if hopeless else "exact", problems)
        trials.finish_trial(trial_seed, problems)
    resumed = await trials.resumed(edge)
    trials.report(
        f"FIN cuts {proxy.stats['close']}, short-but-complete answers {proxy.stats['shorten']}, "
        f"resumes {resumed:.0f}"
    )
    assert not trials.failed, "\n".join(trials.failed)


async def test_bit_flips_in_the_stream_are_never_admitted(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    edge = await behind_proxy(make_edgecache, proxy)
    uplink = app_of(edge)[UPSTREAM].uplink
    base = await scrape(edge.session, str(edge.make_url("")).rstrip("/"))
    trials = Trials(figures, "bit flips in the upstream stream")
    for trial in range(10):
        trial_seed = seed + 4000 + trial
        rng = random.Random(trial_seed)
        size = rng.randrange(2, 3 * MiB // 2)
        image = glance.add_image(rng.randbytes(size), owner="p1")
        faults: list[Fault] = []
        remaining = size
        if trial % 3 == 2:  # the flip comes in a resumed stream
            cut = rng.randrange(1, size)
            faults.append(Fault(reset_at=cut))
            remaining = size - cut
        flips = tuple(sorted(rng.randrange(remaining) for _ in range(rng.randint(1, 3))))
        faults.append(Fault(flip_at=flips))
        proxy.script.queue(image.id, *faults)
        assert await uplink.wait_online(10)
        outcomes = await fetch_all(edge, image, token, rng.randint(1, 3))
        problems = await trials.examine(proxy, edge, cache_dir, trial_seed, image, outcomes)
        # Whoever read the corrupted fill fails; a client that arrives after it was discarded
        # may start a clean fill and get the image. The committed copy (checked above) is exact.
        if not any(o.kind == "transfer_error" for o in outcomes):
            problems.append(f"nobody's transfer failed: {[o.kind for o in outcomes]}")
        again = await download(edge.session, url(edge, image), image.data, headers)
        if again.kind != "exact":
            problems.append(f"the clean retry ended {again.kind}")
        trials.finish_trial(trial_seed, problems)
    after = await scrape(edge.session, str(edge.make_url("")).rstrip("/"))
    failures = after.get("edgecache_verification_failures_total", 0) - base.get(
        "edgecache_verification_failures_total", 0
    )
    trials.report(f"bits flipped {proxy.stats['flip']}, verification failures {failures:.0f}")
    assert not trials.failed, "\n".join(trials.failed)
    assert failures == trials.run


async def test_bit_flips_in_a_whole_image_pass_through_fail_the_transfer(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    seed: int,
    figures: Reporter,
) -> None:
    """An image too big for the cache is passed through whole; edgecache knows its checksum,
    so wrong bytes should still end in a failed transfer, as they do for a fill."""
    token = glance.add_project("p1")
    edge = await behind_proxy(make_edgecache, proxy, max_size=MiB)
    rng = random.Random(seed)
    image = glance.add_image(rng.randbytes(2 * MiB), owner="p1")
    proxy.script.queue(image.id, Fault(flip_at=(rng.randrange(2 * MiB),)))
    outcome = await download(edge.session, url(edge, image), image.data, {"X-Auth-Token": token})
    corrupt = wrong_bytes(outcome, image.data)
    figures.add("fault_trials")
    figures.add("corrupt_bytes_served", corrupt)
    if outcome.acceptable:
        figures.add("fault_trials_survived")
    figures.note(
        f"whole-image pass-through with a flipped bit: client ended {outcome.kind} "
        f"(source {outcome.source}), {corrupt} corrupt bytes served"
    )
    assert outcome.kind == "transfer_error", (
        f"a pass-through with wrong bytes ended {outcome.kind} from {outcome.source}"
    )


async def test_slow_trickle_does_not_hold_up_other_clients(
    glance: FakeGlance,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    figures: Reporter,
) -> None:
    """One image arrives at ~1 KiB/s; meanwhile cached images and other fills go on."""
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    edge = await behind_proxy(make_edgecache, proxy, read_timeout=10.0, stall_timeout=30.0)
    cached = [glance.add_image(os.urandom(MiB), owner="p1") for _ in range(3)]
    for image in cached:
        assert (await download(edge.session, url(edge, image), image.data, headers)).kind == "exact"
    slow = glance.add_image(os.urandom(MiB), owner="p1")
    proxy.script.repeat(slow.id, always(Fault(rate=1024)))

    received = 0
    first_bytes = asyncio.Event()

    async def slow_reader() -> None:
        nonlocal received
        async with edge.get(f"/v2/images/{slow.id}/file", headers=headers) as resp:
            assert resp.status == 200
            while piece := await resp.content.readany():
                received += len(piece)
                first_bytes.set()

    slow_task = asyncio.create_task(slow_reader())
    await asyncio.wait_for(first_bytes.wait(), 30)

    async def timed(image: FakeImage) -> tuple[Outcome, float]:
        started = time.monotonic()
        outcome = await download(edge.session, url(edge, image), image.data, headers)
        return outcome, time.monotonic() - started

    hits: list[tuple[Outcome, float]] = []
    for _ in range(5):
        hits += await asyncio.gather(*(timed(cached[n % 3]) for n in range(6)))
    fresh = [glance.add_image(os.urandom(MiB), owner="p1") for _ in range(2)]
    fills = list(await asyncio.gather(*(timed(image) for image in fresh)))
    metadata_started = time.monotonic()
    for image in cached:
        async with edge.get(f"/v2/images/{image.id}", headers=headers) as resp:
            assert resp.status == 200
    metadata_took = time.monotonic() - metadata_started
    assert not slow_task.done()
    slow_task.cancel()
    await asyncio.gather(slow_task, return_exceptions=True)

    assert all(outcome.kind == "exact" for outcome, _ in hits + fills), hits + fills
    assert {outcome.source for outcome, _ in hits} == {"cache"}
    hit_times = [took for _, took in hits]
    figures.note(
        f"while one image trickled at 1 KiB/s ({received} B so far): {len(hits)} cached 1 MiB "
        f"downloads median {statistics.median(hit_times) * 1000:.0f} ms, max "
        f"{max(hit_times) * 1000:.0f} ms; 2 concurrent cold 1 MiB fills "
        f"{', '.join(f'{took * 1000:.0f} ms' for _, took in fills)}; 3 metadata reads "
        f"{metadata_took * 1000:.0f} ms"
    )


REAL_OS_OPEN = os.open


@pytest.mark.parametrize("cause", ["unknown hash algorithm", "no descriptors left"])
async def test_a_fill_that_cannot_start_leaks_nothing(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    cause: str,
    figures: Reporter,
) -> None:
    """A fill that fails as it starts, after its space was reserved: a record naming a hash
    algorithm hashlib does not know (a broken upstream; md5 present), or EMFILE opening the
    partial file (descriptors exhausted). No 5xx, and no leaked reservation, fd or file."""
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    edge = await make_edgecache(max_size=4 * MiB)
    if cause == "unknown hash algorithm":
        odd = glance.add_image(
            os.urandom(3 * MiB), owner="p1", hash_algo="bogus", hash_value="ab" * 64
        )
    else:
        odd = glance.add_image(os.urandom(3 * MiB), owner="p1")
        incoming = str(cache_dir / "incoming")

        def no_descriptors(path: str | os.PathLike[str], *args: int, **kwargs: int) -> int:
            if str(path).startswith(incoming):
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return REAL_OS_OPEN(path, *args, **kwargs)

        monkeypatch.setattr(os, "open", no_descriptors)  # edgecache.store.fill calls os.open
    outcomes = [
        await download(edge.session, url(edge, odd), odd.data, headers, ok_statuses=(200, 502))
        for _ in range(4)
    ]
    monkeypatch.undo()
    fds_leaked = len(open_files_under(cache_dir / "incoming"))
    partials = partial_files(cache_dir)
    normal = glance.add_image(os.urandom(3 * MiB), owner="p1")
    after = await download(edge.session, url(edge, normal), normal.data, headers)
    leaks = (fds_leaked > 0) + bool(partials) + (after.source != "fill")
    figures.add("leaks", leaks)
    figures.note(
        f"{cause}: answers {[o.status for o in outcomes]}, fds leaked {fds_leaked}, partial "
        f"files {len(partials)}, next 3 MiB image of a 4 MiB cache served from {after.source}"
    )
    assert all(o.status in (200, 502) for o in outcomes), [(o.kind, o.status) for o in outcomes]
    assert fds_leaked <= 0
    assert not partials
    assert after.kind == "exact"
    assert after.source == "fill", "the failed fill's space reservation was never released"
