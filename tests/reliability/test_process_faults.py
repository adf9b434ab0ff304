"""`kill -9` of a real `edgecache serve` at random moments during fills and evictions.

After each kill the daemon is started again on the same cache dir, and then: the partial
files left are kept partials (issue 22), each exactly the beginning of its image with its
record, and each is resumed into the exact image by a fill, never served as a copy; the index
(table blobs) and blobs/ agree exactly, every stored copy is byte-exact, pinned copies
(committed, never evicted) survive, copies committed and not evicted survive, and everything
cached reads back byte-exact from the cache.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import EdgecacheFactory, MiB, UpstreamServer
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage
from tests.reliability.conftest import Reporter
from tests.reliability.daemon import Config, Daemon, Daemons
from tests.reliability.faultproxy import Fault, FaultProxy, RequestHead
from tests.reliability.helpers import (
    Outcome,
    blob_files,
    download,
    index_rows,
    md5_file,
    partial_files,
    scrape,
)

TRIALS = 24
RATE = 4 * MiB  # bytes/s per upstream stream: fills take 0.1-0.4 s, long enough to be killed
CONFIG: Config = {
    "upstream": {"read_timeout": 5, "stall_timeout": 5, "probe_interval": 0.2},
    "cache": {"max_size": "3MiB", "chunk_size": "64KiB"},
}
_COMMITTED = re.compile(r"cached image ([0-9a-f-]{36}):")
_EVICTED = re.compile(r"evicting image ([0-9a-f-]{36}) ")


class Pacing:
    """Image streams at RATE (so fills can be killed half-way) or, while off, at full speed."""

    def __init__(self) -> None:
        self.on = True

    def __call__(self, head: RequestHead) -> Fault | None:
        return Fault(rate=RATE) if head.is_data and self.on else None


def last_events(stderr: str) -> dict[str, str]:
    """image id -> 'committed' or 'evicted', whichever the daemon logged last for it."""
    events: dict[str, str] = {}
    for line in stderr.splitlines():
        if match := _COMMITTED.search(line):
            events[match.group(1)] = "committed"
        elif match := _EVICTED.search(line):
            events[match.group(1)] = "evicted"
    return events


async def admin_request(daemon: Daemon, method: str, path: str) -> int:
    connector = aiohttp.UnixConnector(path=str(daemon.admin_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, f"http://edgecache/edgecache/admin{path}") as resp,
    ):
        await resp.read()
        return resp.status


def kept_partials(cache_dir: Path, images: dict[str, FakeImage]) -> tuple[list[str], set[str]]:
    """What is wrong with the partial files start-up kept, and the images they are of: each
    must be the beginning of its image (a kill loses nothing the page cache holds), with its
    record, and nothing else may be left in incoming/."""
    problems: list[str] = []
    names = set(partial_files(cache_dir))
    kept = {name.removesuffix(".part") for name in names if name.endswith(".part")}
    if names != {f"{image_id}{suffix}" for image_id in kept for suffix in (".part", ".json")}:
        problems.append(f"incoming/ holds more than kept partials and their records: {names}")
    for image_id in kept:
        data = (cache_dir / "incoming" / f"{image_id}.part").read_bytes()
        if image_id not in images or not images[image_id].data.startswith(data):
            problems.append(f"the partial of {image_id} is not the beginning of its image")
    return problems, kept


async def consistency(
    daemon: Daemon, images: dict[str, FakeImage], token: str, expected: set[str]
) -> tuple[list[str], set[str], int, int]:
    """What is wrong with the cache the daemon started on, which images it holds, how many
    expected copies are missing, and how many kept partials were resumed."""
    cache_dir = daemon.cache_dir
    problems, kept = kept_partials(cache_dir, images)
    rows, files = index_rows(cache_dir), blob_files(cache_dir)
    if rows != files:
        problems.append(f"index {rows} and blobs/ {files} disagree")
    for image_id in set(rows) & set(files):
        if md5_file(cache_dir / "blobs" / image_id) != images[image_id].checksum:
            problems.append(f"stored copy of {image_id} is not the image")
    lost = expected - set(rows)
    # An eviction is logged before its copy is removed, so no kill can hide one.
    if lost:
        problems.append(f"committed copies lost: {sorted(lost)}")
    async with aiohttp.ClientSession() as session:
        for image_id in rows:
            image = images[image_id]
            outcome = await download(
                session,
                f"{daemon.url}/v2/images/{image_id}/file",
                image.data,
                {"X-Auth-Token": token},
            )
            if (outcome.kind, outcome.source) != ("exact", "cache"):
                problems.append(f"read back {image_id}: {outcome.kind} from {outcome.source}")
        for image_id in kept - set(rows):
            image = images[image_id]
            url = f"{daemon.url}/v2/images/{image_id}/file"
            outcome = await download(session, url, image.data, {"X-Auth-Token": token})
            if (outcome.kind, outcome.source) != ("exact", "fill"):
                problems.append(f"resumed {image_id}: {outcome.kind} from {outcome.source}")
    return problems, set(rows), len(lost), len(kept - set(rows))


async def test_kill_9_during_fills_and_evictions(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    seed: int,
    figures: Reporter,
) -> None:
    glance.cache_enabled = True  # so that Glance's cache_delete lets the admin delete copies
    proxy = FaultProxy(upstream_server.port)
    pacing = Pacing()
    proxy.plan = pacing
    await proxy.start()
    try:
        await _kill_trials(glance, proxy, pacing, daemons, tmp_path / "cache", seed, figures)
    finally:
        await proxy.close()


async def _kill_trials(
    glance: FakeGlance,
    proxy: FaultProxy,
    pacing: Pacing,
    daemons: Daemons,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    rng = random.Random(seed)
    pool = [
        glance.add_image(rng.randbytes(rng.randrange(MiB // 2, 3 * MiB // 2)), owner="p1")
        for _ in range(14)
    ]
    pinned = [glance.add_image(rng.randbytes(256 * 1024), owner="p1") for _ in range(2)]
    images = {image.id: image for image in [*pool, *pinned]}
    daemon = await daemons.start(proxy.url, cache_dir, CONFIG)
    async with aiohttp.ClientSession() as session:
        for image in pinned:
            url = f"{daemon.url}/v2/images/{image.id}/file"
            assert (await download(session, url, image.data, headers)).kind == "exact"
            assert await admin_request(daemon, "PUT", f"/pin/{image.id}") == 204
    held = set(index_rows(cache_dir))
    failed: list[str] = []
    seen: Counter[str] = Counter()
    for trial in range(TRIALS):
        trial_seed = seed + trial
        rng = random.Random(trial_seed)
        session = aiohttp.ClientSession()
        removed: set[str] = set()
        work: list[asyncio.Task[Outcome | int]] = []
        pacing.on = False  # first fill the cache (unhurried), so the next fills must evict
        for image in rng.sample(pool, 3):
            url = f"{daemon.url}/v2/images/{image.id}/file"
            assert (await download(session, url, image.data, headers)).kind == "exact"
        held = set(index_rows(cache_dir))
        pacing.on = True
        cold = [image for image in pool if image.id not in held]
        chosen = [rng.choice(cold), *(rng.choice(pool) for _ in range(rng.randint(1, 5)))]
        for image in chosen:  # at least one fill (with its evictions) in every trial
            url = f"{daemon.url}/v2/images/{image.id}/file"
            work.append(asyncio.create_task(download(session, url, image.data, headers)))
        if rng.random() < 0.4 and (victims := sorted(held - {i.id for i in pinned})):
            victim = rng.choice(victims)
            removed.add(victim)
            if rng.random() < 0.5:
                request = admin_request(daemon, "DELETE", f"/cache/{victim}")
            else:
                request = _cache_api_delete(session, daemon, victim)
            work.append(asyncio.create_task(request))
        await asyncio.sleep(rng.uniform(0.0, 0.3))  # the kill's random moment, not a wait
        try:
            metrics = await asyncio.wait_for(scrape(session, daemon.url), 1)
        except (TimeoutError, aiohttp.ClientError):
            metrics = {}
        await daemon.kill9()
        results = await asyncio.gather(*work, return_exceptions=True)
        await session.close()
        if metrics.get("edgecache_fills_in_progress", 0) > 0:
            seen["kills during a fill"] += 1
        if metrics.get("edgecache_evictions_total", 0) > 0:
            seen["trials with evictions"] += 1
        problems: list[str] = []
        for result in results:
            if isinstance(result, Outcome):
                seen[result.kind] += 1
                if not result.acceptable:
                    problems.append(f"a client ended {result.kind} ({len(result.body)} bytes)")
        events = last_events(daemon.stderr())
        expected = {i for i in held if i not in events and i not in removed}
        expected |= {i for i, event in events.items() if event == "committed"} - removed
        expected |= {i.id for i in pinned}
        daemon = await daemons.start(proxy.url, cache_dir, CONFIG)
        found, held, lost, resumed = await consistency(daemon, images, token, expected)
        seen["copies lost to an eviction in flight"] += lost
        seen["kept partials resumed"] += resumed
        problems += found
        if not {i.id for i in pinned} <= held:
            problems.append("a pinned copy did not survive")
        figures.add("kill_trials")
        if problems:
            failed.append(f"seed {trial_seed}: " + "; ".join(problems))
        else:
            figures.add("kill_trials_consistent")
    figures.note(
        f"{TRIALS} kill -9 trials (seeds {seed}..{seed + TRIALS - 1}), inconsistent "
        f"{len(failed)}; {dict(seen)}; {len(held)} copies at the end"
    )
    assert not failed, "\n".join(failed)
    assert seen["kills during a fill"] >= TRIALS // 3, seen
    assert seen["kept partials resumed"] > 0, seen


async def _cache_api_delete(session: aiohttp.ClientSession, daemon: Daemon, image_id: str) -> int:
    async with session.delete(
        f"{daemon.url}/v2/cache/{image_id}", headers={"X-Auth-Token": ADMIN_TOKEN}
    ) as resp:
        await resp.read()
        return resp.status


def leave_empty_key(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True)
    key = cache_dir / "token-hash.key"
    key.touch(mode=0o600)
    return key


async def test_an_empty_token_key_left_by_a_crash_is_not_used(
    make_edgecache: EdgecacheFactory, cache_dir: Path, figures: Reporter
) -> None:
    """token-hash.key is created (O_EXCL) and then written: a crash in between leaves an empty
    file, and every later start would hash tokens with an empty HMAC key, so a copied index
    could be matched against tokens without any secret. Start-up must not accept it."""
    key = leave_empty_key(cache_dir)
    try:
        await make_edgecache()
    except Exception as exc:  # refusing to start is an acceptable answer too
        figures.note(f"empty token key: start-up refused ({exc!r})")
        return
    size = key.stat().st_size
    figures.add("leaks", size == 0)
    figures.note(f"empty token key left by a crash: after start-up it holds {size} bytes")
    assert size >= 16, "edgecache started with an empty token-hash key"
