"""Disk faults: a full filesystem (a real small tmpfs when this host lets us mount one, and
fault hooks on the write path), and bit flips in stored copies. The daemon keeps answering
(pass-through, or a failure the client sees), never serves or admits wrong bytes, leaves
nothing behind, and recovers when space returns."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter, namedtuple
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edgecache.api.operator import create_operator_app
from edgecache.appkeys import CACHE
from edgecache.store import evict
from edgecache.store.index import Index
from tests.conftest import EdgecacheFactory, MiB, UpstreamServer
from tests.fakeglance import FakeGlance, FakeImage
from tests.reliability.conftest import Reporter
from tests.reliability.daemon import Daemons
from tests.reliability.helpers import (
    Edge,
    Outcome,
    app_of,
    blob_files,
    download,
    index_rows,
    partial_files,
    scrape,
    settle,
    wrong_bytes,
)

Usage = namedtuple("Usage", "total used free")
# The hooks replace os.pwrite and shutil.disk_usage, which edgecache.store.fill and
# edgecache.store.evict look up on those modules at each call.
REAL_PWRITE = os.pwrite


def url(edge: Edge, image: FakeImage) -> str:
    return str(edge.make_url(f"/v2/images/{image.id}/file"))


async def get(edge: Edge, image: FakeImage, token: str) -> Outcome:
    return await download(edge.session, url(edge, image), image.data, {"X-Auth-Token": token})


def consistent(cache_dir: Path) -> list[str]:
    problems = []
    if partial_files(cache_dir):
        problems.append(f"partial files: {partial_files(cache_dir)}")
    if index_rows(cache_dir) != blob_files(cache_dir):
        problems.append(f"index {index_rows(cache_dir)} != blobs {blob_files(cache_dir)}")
    return problems


def fill_disk(path: Path) -> int:
    """Write `path` until the filesystem says ENOSPC; returns how much was written."""
    written = 0
    block = b"\0" * (256 * 1024)
    with path.open("ab") as handle:
        while True:
            try:
                handle.write(block)
                handle.flush()
                written += len(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    with contextlib.suppress(OSError):
        os.truncate(path, written)  # whatever the failed flush left is dropped
    return written


@pytest.fixture
def small_filesystem(figures: Reporter) -> Iterator[Path]:
    """A 100 MiB tmpfs of our own (edgecache keeps 64 MiB of headroom for its index)."""
    mount_point = Path(tempfile.mkdtemp(prefix="rel-tmpfs-"))
    command = ["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount_point)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        mount_point.rmdir()
        figures.note(f"mount not permitted here ({exc}); the fault-hook tests stand in")
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=10)
        with contextlib.suppress(OSError):
            mount_point.rmdir()


async def test_full_filesystem_on_a_real_tmpfs(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    small_filesystem: Path,
    figures: Reporter,
) -> None:
    cache_dir = small_filesystem / "cache"
    edge = await make_edgecache(cache_dir=cache_dir, max_size=80 * MiB)
    token = glance.add_project("p1")
    steps: list[str] = []
    first = glance.add_image(os.urandom(2 * MiB), owner="p1")
    assert (await get(edge, first, token)).kind == "exact"

    filler = small_filesystem / "someone-elses-data"
    fill_disk(filler)
    cold = glance.add_image(os.urandom(2 * MiB), owner="p1")
    answer = await get(edge, cold, token)
    steps.append(f"disk full: cold image {answer.kind} from {answer.source}")
    assert (answer.kind, answer.source) == ("exact", "upstream")
    answer = await get(edge, first, token)
    steps.append(f"cached image {answer.kind} from {answer.source}")
    assert answer.kind == "exact"
    for path in (f"/v2/images/{cold.id}", "/v2/images", "/healthz", "/metrics"):
        async with edge.get(path, headers={"X-Auth-Token": token}) as resp:
            assert resp.status == 200, path
    assert not consistent(cache_dir)

    # Space is there when the fill starts, and taken by someone else half-way through.
    filler.unlink()
    squeezed = glance.add_image(os.urandom(4 * MiB), owner="p1")
    squeezed.faults.hold_at = MiB
    reader = asyncio.create_task(get(edge, squeezed, token))
    await squeezed.faults.reached_hold.wait()
    fill_disk(filler)
    squeezed.faults.release.set()
    answer = await reader
    steps.append(f"ENOSPC mid-fill: client {answer.kind}")
    assert answer.kind == "transfer_error"
    assert await app_of(edge)[CACHE].index.get(squeezed.id) is None
    assert not consistent(cache_dir)
    async with edge.get("/healthz") as resp:
        assert resp.status == 200

    filler.unlink()  # space returns
    for image, source in ((squeezed, "fill"), (squeezed, "cache"), (cold, "fill")):
        answer = await get(edge, image, token)
        assert (answer.kind, answer.source) == ("exact", source)
    steps.append("space back: fills and hits again")
    assert not consistent(cache_dir)
    figures.add("fault_trials")
    figures.add("fault_trials_survived")
    figures.note("100 MiB tmpfs: " + "; ".join(steps))


async def test_enospc_on_write_fails_the_fill_visibly_then_recovers(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Reporter,
) -> None:
    """The hook stand-in for a full disk: os.pwrite in the fill raises ENOSPC half-way."""
    edge = await make_edgecache()
    token = glance.add_project("p1")
    cached = glance.add_image(os.urandom(MiB), owner="p1")
    assert (await get(edge, cached, token)).kind == "exact"

    def no_space(fd: int, data: bytes, offset: int) -> int:
        if offset + len(data) > 512 * 1024:  # (pieces may be large: the whole image at once)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return REAL_PWRITE(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", no_space)
    image = glance.add_image(os.urandom(2 * MiB), owner="p1")
    outcomes = await asyncio.gather(*(get(edge, image, token) for _ in range(3)))
    assert [o.kind for o in outcomes] == ["transfer_error"] * 3
    assert not consistent(cache_dir)
    assert await app_of(edge)[CACHE].index.get(image.id) is None
    hit = await get(edge, cached, token)
    assert (hit.kind, hit.source) == ("exact", "cache")

    # The free-space check now sees the full disk too: pass-through, not a failing fill.
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(10 * MiB, 10 * MiB, 0))
    through = await get(edge, image, token)
    assert (through.kind, through.source) == ("exact", "upstream")

    monkeypatch.undo()
    for source in ("fill", "cache"):
        answer = await get(edge, image, token)
        assert (answer.kind, answer.source) == ("exact", source)
    assert not consistent(cache_dir)
    figures.add("fault_trials")
    figures.add("fault_trials_survived")
    figures.note("pwrite ENOSPC hook: 3 clients failed visibly, then pass-through, then recovery")


async def test_a_short_write_is_never_served_or_admitted(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    figures: Reporter,
) -> None:
    """pwrite(2) may write less than asked (a filesystem filling up, then freed again by an
    eviction or another process). The fill must not count bytes that never reached the file."""
    edge = await make_edgecache()
    token = glance.add_project("p1")
    shorted: list[int] = []

    def short_once(fd: int, data: bytes, offset: int) -> int:
        if not shorted and len(data) > 1:
            shorted.append(offset)
            return REAL_PWRITE(fd, data[: len(data) // 2], offset)
        return REAL_PWRITE(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", short_once)
    image = glance.add_image(random.Random(seed).randbytes(3 * MiB), owner="p1")
    image.faults.hold_at = MiB  # the stream pauses, so that more pieces follow the short one
    quick = aiohttp.ClientTimeout(total=None, sock_read=5)
    headers = {"X-Auth-Token": token}
    target = url(edge, image)
    readers = asyncio.gather(
        *(download(edge.session, target, image.data, headers, (200,), quick) for _ in "ab")
    )
    await image.faults.reached_hold.wait()
    fill = app_of(edge)[CACHE].filling(image.id)
    assert fill is not None
    await fill.readable_end(MiB - 2)  # everything before the pause has been written
    image.faults.release.set()
    outcomes = await readers
    monkeypatch.undo()
    assert shorted, "the fill never wrote"
    corrupt = sum(wrong_bytes(o, image.data) for o in outcomes)
    figures.add("corrupt_bytes_served", corrupt)
    entry = await app_of(edge)[CACHE].index.get(image.id)
    stored_ok = entry is None or (cache_dir / "blobs" / image.id).read_bytes() == image.data
    figures.add("fault_trials")
    if corrupt == 0 and stored_ok:
        figures.add("fault_trials_survived")
    figures.note(
        f"one short pwrite at offset {shorted[0]}: clients {[o.kind for o in outcomes]}, "
        f"{corrupt} wrong bytes served as a success, committed copy "
        f"{'absent' if entry is None else 'exact' if stored_ok else 'CORRUPT'}"
    )
    assert all(o.acceptable for o in outcomes), [o.kind for o in outcomes]
    assert stored_ok, "a copy that differs from the image was committed"


async def test_index_full_at_commit_leaves_no_orphan(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    figures: Reporter,
) -> None:
    """The blob fits but the index row cannot be written (sqlite: disk full): the client sees
    a failure, and the renamed file must not stay in blobs/ unaccounted for."""
    edge = await make_edgecache()
    token = glance.add_project("p1")

    async def index_full(self: Index, entry: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Index, "add", index_full)
    image = glance.add_image(os.urandom(2 * MiB), owner="p1")
    outcome = await get(edge, image, token)
    monkeypatch.undo()
    orphans = sorted(set(blob_files(cache_dir)) - set(index_rows(cache_dir)))
    figures.add("leaks", len(orphans))
    figures.note(
        f"index write failing at commit: client {outcome.kind}; "
        f"{len(orphans)} unindexed file(s) left in blobs/ ({sum(blob_files(cache_dir).values())} B)"
    )
    assert outcome.acceptable
    assert not orphans, f"blobs/ holds files the index does not know: {orphans}"
    again = await get(edge, image, token)
    assert (again.kind, again.source) == ("exact", "fill")


async def test_a_cold_request_on_a_full_disk_does_not_wipe_the_cache(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    monkeypatch: pytest.MonkeyPatch,
    figures: Reporter,
) -> None:
    """Someone else filled the disk: evicting every copy and then passing the image through
    anyway loses the whole cache for nothing. Copies should go only if that makes room."""
    edge = await make_edgecache()
    token = glance.add_project("p1")
    cached = [glance.add_image(os.urandom(MiB), owner="p1") for _ in range(3)]
    for image in cached:
        assert (await get(edge, image, token)).kind == "exact"
    monkeypatch.setattr(shutil, "disk_usage", lambda _: Usage(100 * MiB, 100 * MiB, 0))
    cold = glance.add_image(os.urandom(MiB), owner="p1")
    answer = await get(edge, cold, token)
    assert (answer.kind, answer.source) == ("exact", "upstream")
    kept = [e.image_id for e in await app_of(edge)[CACHE].index.all()]
    figures.note(
        f"disk full (free 0, headroom {evict.DISK_HEADROOM >> 20} MiB unreachable): a cold "
        f"request passed through and left {len(kept)} of {len(cached)} cached copies"
    )
    assert len(kept) == len(cached), "copies were evicted although no room could be made"


def flip_bit(path: Path, offset: int, bit: int) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([byte ^ (1 << bit)]))


async def test_bit_flips_in_stored_copies_are_detected_on_read(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    edge = await make_edgecache()
    token = glance.add_project("p1")
    headers = {"X-Auth-Token": token}
    outcomes: list[str] = []
    failed: list[str] = []
    for trial in range(10):
        rng = random.Random(seed + 5000 + trial)
        image = glance.add_image(rng.randbytes(rng.randrange(2, 2 * MiB)), owner="p1")
        assert (await get(edge, image, token)).kind == "exact"
        offset = rng.randrange(len(image.data))
        flip_bit(cache_dir / "blobs" / image.id, offset, rng.randrange(8))
        if trial % 2:  # a Range over the flipped byte
            start = rng.randrange(offset + 1)
            end = rng.randrange(offset, len(image.data))
            expected = image.data[start : end + 1]
            outcome = await download(
                edge.session,
                url(edge, image),
                expected,
                {**headers, "Range": f"bytes={start}-{end}"},
                ok_statuses=(206,),
            )
        else:
            expected = image.data
            outcome = await get(edge, image, token)
        figures.add("corrupt_bytes_served", wrong_bytes(outcome, expected))
        outcomes.append(f"{outcome.kind}/{outcome.source}")
        await settle(app_of(edge)[CACHE])  # a corrupt copy is fetched again in the background
        problems = consistent(cache_dir)
        if not outcome.acceptable:
            problems.append(f"the client got {outcome.kind}")
        if not any(p.name.startswith(image.id) for p in (cache_dir / "quarantine").iterdir()):
            problems.append("the corrupt copy was not quarantined")
        again = await get(edge, image, token)
        if again.kind != "exact":
            problems.append(f"after quarantine: {again.kind}")
        figures.add("fault_trials")
        if problems:
            failed.append(f"seed {seed + 5000 + trial}: {problems}")
        else:
            figures.add("fault_trials_survived")
    metrics = await scrape(edge.session, str(edge.make_url("")).rstrip("/"))
    figures.note(
        f"10 stored copies with a flipped bit (seeds {seed + 5000}..{seed + 5009}): clients "
        f"{outcomes}; edgecache_corrupt_blobs_total "
        f"{metrics.get('edgecache_corrupt_blobs_total', 0):.0f}"
    )
    assert not failed, failed
    assert metrics.get("edgecache_corrupt_blobs_total", 0) >= 10


@pytest.mark.parametrize("damage", ["bit flips", "lost tails"])
async def test_damaged_stored_copies_are_found_by_cache_verify(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    damage: str,
    figures: Reporter,
) -> None:
    """`edgecache cache verify` (over the admin socket) finds copies with flipped bits or a
    lost tail, quarantines them and exits 1; they are fetched again on next use."""
    edge = await make_edgecache()
    token = glance.add_project("p1")
    rng = random.Random(seed)
    images = [
        glance.add_image(rng.randbytes(MiB + rng.randrange(MiB)), owner="p1") for _ in range(4)
    ]
    for image in images:
        assert (await get(edge, image, token)).kind == "exact"
    damaged, intact = images[:2], images[2:]
    for image in damaged:
        blob = cache_dir / "blobs" / image.id
        if damage == "bit flips":
            flip_bit(blob, rng.randrange(len(image.data)), rng.randrange(8))
        else:
            os.truncate(blob, len(image.data) - rng.randrange(1, MiB))

    socket_dir = Path(tempfile.mkdtemp(prefix="rel-sock-"))
    socket_path = socket_dir / "admin.sock"
    operator = web.AppRunner(create_operator_app(app_of(edge)))  # the admin socket's own app
    await operator.setup()
    site = web.UnixSite(operator, str(socket_path))
    await site.start()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgecache", "cache", "verify", "--socket", str(socket_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "EDGECACHE_CONFIG": ""},
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await operator.cleanup()
        shutil.rmtree(socket_dir, ignore_errors=True)
    text = output.decode()
    figures.note(f"{damage}: cache verify exit {process.returncode}: {text.strip()[-120:]!r}")
    assert process.returncode == 1, text
    assert "4 verified, 2 corrupt" in text, text
    cached = {e.image_id for e in await app_of(edge)[CACHE].index.all()}
    assert cached == {i.id for i in intact}
    quarantined = {p.name.split(".")[0] for p in (cache_dir / "quarantine").iterdir()}
    assert quarantined == {i.id for i in damaged}
    for image in damaged:
        answer = await get(edge, image, token)
        assert (answer.kind, answer.source) == ("exact", "fill")
    assert not consistent(cache_dir)


async def test_a_truncated_stored_copy_is_detected_on_read(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    seed: int,
    figures: Reporter,
) -> None:
    """A stored copy that lost its tail (a filesystem repair, an operator's mistake): reads
    fail visibly or are fetched again, the copy is quarantined, never a 5xx or short success."""
    edge = await make_edgecache()
    token = glance.add_project("p1")
    rng = random.Random(seed)
    seen: list[str] = []
    problems: list[str] = []
    for ranged in (False, True):
        image = glance.add_image(rng.randbytes(2 * MiB), owner="p1")
        assert (await get(edge, image, token)).kind == "exact"
        keep = rng.randrange(MiB, 2 * MiB - 1)
        os.truncate(cache_dir / "blobs" / image.id, keep)
        if ranged:
            start = keep - 1000
            outcome = await download(
                edge.session,
                url(edge, image),
                image.data[start:],
                {"X-Auth-Token": token, "Range": f"bytes={start}-"},
                ok_statuses=(206,),
            )
        else:
            outcome = await get(edge, image, token)
        await settle(app_of(edge)[CACHE])
        seen.append(f"{'range' if ranged else 'full'}: {outcome.kind} {outcome.status}")
        figures.add("corrupt_bytes_served", wrong_bytes(outcome, image.data))
        figures.add("fault_trials")
        if outcome.acceptable and not (outcome.status or 0) >= 500:
            figures.add("fault_trials_survived")
        else:
            problems.append(f"{seen[-1]}: {outcome.body[:80]!r}")
        again = await get(edge, image, token)
        if again.kind != "exact":
            problems.append(f"read after the truncated copy: {again.kind} {again.status}")
    figures.note(f"stored copies truncated: {seen}")
    assert not problems, problems


async def test_a_stored_copy_truncated_under_readers_does_not_kill_the_daemon(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    seed: int,
    figures: Reporter,
) -> None:
    """Hits hash stored chunks through mmap: if the file shrinks while a chunk is mapped
    (truncation, or an I/O error on a failing disk), touching the lost pages raises SIGBUS,
    which kills the whole process unless reads handle it. One 128 MiB chunk per image, so
    that every hit keeps a long mapping; a thread truncates and restores the copy meanwhile."""
    token = glance.add_project("p1")
    image = glance.add_image(random.Random(seed).randbytes(128 * MiB), owner="p1")
    config = {"cache": {"chunk_size": "128MiB", "max_size": "1GiB"}}
    daemon = await daemons.start(upstream_server.url, tmp_path / "cache", config)
    url = f"{daemon.url}/v2/images/{image.id}/file"
    headers = {"X-Auth-Token": token}
    blob = tmp_path / "cache" / "blobs" / image.id
    async with aiohttp.ClientSession() as session:
        assert (await download(session, url, image.data, headers)).kind == "exact"
    statuses: Counter[str] = Counter()
    stop = threading.Event()

    def truncate_and_restore() -> int:
        rng = random.Random(seed)
        rounds = 0
        while not stop.is_set() and daemon.process.returncode is None and rounds < 200:
            rounds += 1
            stop.wait(rng.uniform(0.005, 0.04))  # the fault's random moment
            with contextlib.suppress(FileNotFoundError):
                os.truncate(blob, MiB)
            stop.wait(0.005)
            with contextlib.suppress(FileNotFoundError), blob.open("r+b") as handle:
                handle.write(image.data)
        return rounds

    async def reader() -> None:
        # Gives up on a stalled answer quickly, so that new reads (new mappings) keep coming.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=0.5)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not stop.is_set() and daemon.process.returncode is None:
                try:
                    async with session.get(url, headers=headers) as resp:
                        body = await resp.read()
                        statuses[f"{resp.status} {'exact' if body == image.data else 'short'}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1

    readers = [asyncio.create_task(reader()) for _ in range(8)]
    try:
        rounds = await asyncio.wait_for(asyncio.to_thread(truncate_and_restore), 60)
    finally:
        stop.set()
        await asyncio.gather(*readers)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(daemon.process.wait(), 1)  # a dying daemon: let it finish
    code = daemon.process.returncode
    figures.add("fault_trials")
    if code is None:
        figures.add("fault_trials_survived")
    figures.note(
        f"blob truncated under 8 readers, {rounds} rounds: daemon "
        f"{'alive' if code is None else f'DIED with {code}'}; reads {dict(statuses)}"
    )
    assert code is None, f"the daemon died (exit {code}; -7 is SIGBUS)"


async def test_a_copy_shorter_than_its_record_fails_the_transfer_instead_of_hanging(
    glance: FakeGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    figures: Reporter,
) -> None:
    """With verify_reads off, a stored copy that lost its tail is sent as it is: sendfile then
    sends fewer bytes than asked and the response must be aborted, not left open (keep-alive)
    with the client waiting for bytes that will never come."""
    edge = await make_edgecache(verify_reads=False)
    token = glance.add_project("p1")
    image = glance.add_image(os.urandom(2 * MiB), owner="p1")
    assert (await get(edge, image, token)).kind == "exact"
    os.truncate(cache_dir / "blobs" / image.id, MiB)
    started = asyncio.get_running_loop().time()
    outcome = await download(
        edge.session,
        url(edge, image),
        image.data,
        {"X-Auth-Token": token},
        client_timeout=aiohttp.ClientTimeout(total=None, sock_read=5),
    )
    took = asyncio.get_running_loop().time() - started
    figures.add("fault_trials")
    figures.add("corrupt_bytes_served", wrong_bytes(outcome, image.data))
    if outcome.kind == "transfer_error":
        figures.add("fault_trials_survived")
    figures.note(f"copy 1 MiB short, verify_reads off: client {outcome.kind} after {took:.1f}s")
    assert outcome.kind == "transfer_error", f"the client's transfer ended {outcome.kind}"
