"""Load generation: aiohttp clients in worker processes, so one interpreter is not the limit.

Each worker runs one job at a time in its own event loop and reports what every request saw
(status, where the bytes came from, timings, whether the bytes were right) plus its own CPU
use, so the harness can tell when the client rather than the server was the bottleneck.
Bodies are counted (and hashed when asked) as they arrive and never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import multiprocessing
import os
import random
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import aiohttp
import xxhash

TOKEN = "bench-token"
AUTH = {"X-Auth-Token": TOKEN}
_READ_BUFSIZE = 1 << 20
_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # mallopt(3) parameters


@dataclass(frozen=True)
class StreamJob:
    """`streams` concurrent full GETs of `url`, all sent at `start_at` (time.monotonic)."""

    url: str
    streams: int
    start_at: float
    size: int
    xxh3: str | None  # check the bytes against this digest; None: count them only
    source_header: str


@dataclass(frozen=True)
class RangeJob:
    """GETs of `piece` bytes at random offsets, `concurrency` at a time, for `duration` s."""

    url: str
    start_at: float
    duration: float
    concurrency: int
    size: int
    piece: int
    seed: int
    content: str | None  # the file the image is a prefix of, to check each piece; None: don't
    source_header: str


@dataclass(frozen=True)
class MetadataJob:
    """GETs of an image record, `concurrency` at a time, for `duration` seconds."""

    url: str
    start_at: float
    duration: float
    concurrency: int
    image_id: str | None  # check each record names this image; None: status only


Job = StreamJob | RangeJob | MetadataJob


@dataclass(frozen=True)
class Transfer:
    """One full download as a client saw it; times are time.monotonic() values."""

    status: int
    source: str
    size: int
    first_byte_at: float
    done_at: float
    error: str | None


@dataclass
class LoopTally:
    """What a request loop did: counts, bytes, wrong answers (at most a few kept)."""

    requests: int = 0
    size: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def fail(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(message)


@dataclass(frozen=True)
class Done:
    """A worker's answer to one job."""

    result: list[Transfer] | LoopTally
    cpu: float  # CPU seconds the worker process used for the job
    active: float  # seconds from the job's start time to its end

    @property
    def busy(self) -> float:
        """Fraction of one core the client used: near 1.0 means the client was the limit."""
        return self.cpu / self.active if self.active > 0 else 0.0


class ClientFailed(RuntimeError):
    """A client worker crashed or stopped answering."""


class ClientPool:
    """A fixed set of worker processes; `run` gives job i to worker i."""

    def __init__(self, processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for number in range(processes):
            mine, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(theirs,), name=f"bench-client-{number}", daemon=True
            )
            process.start()
            theirs.close()
            self._workers.append((process, mine))

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._workers if process.pid is not None]

    def run(self, jobs: list[Job], timeout: float = 900.0) -> list[Done]:
        if len(jobs) > len(self._workers):
            raise ValueError(f"{len(jobs)} jobs for {len(self._workers)} workers")
        for (_, connection), job in zip(self._workers, jobs, strict=False):
            connection.send(job)
        answers: list[Done] = []
        for process, connection in self._workers[: len(jobs)]:
            if not connection.poll(timeout):
                raise ClientFailed(f"{process.name} gave no answer within {timeout:.0f}s")
            answer = connection.recv()
            if not isinstance(answer, Done):
                raise ClientFailed(f"{process.name} failed:\n{answer}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for process, connection in self._workers:
            with contextlib.suppress(OSError):  # a worker that died has closed its end
                connection.send(None)
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join()
            connection.close()


def split(total: int, parts: int) -> list[int]:
    """`total` as nearly equal positive shares over at most `parts` workers."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _keep_freed_memory() -> None:
    """Stop glibc from handing memory back to the kernel after every piece of a body.

    aiohttp allocates a fresh bytes object (up to 256 KiB) per socket read; with glibc's
    defaults each one is mapped or trimmed away again, and a profile of the client showed a
    fifth of its time in brk. Keeping freed memory cut the client's CPU per byte by about half.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TOP_PAD, 256 << 20)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit


def _worker_main(connection: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the harness handles Ctrl-C and stops us
    _keep_freed_memory()
    while (job := connection.recv()) is not None:
        cpu_before = time.process_time()
        try:
            result = asyncio.run(_run(job))
        except Exception:
            connection.send(traceback.format_exc())
            continue
        active = time.monotonic() - job.start_at
        connection.send(Done(result, time.process_time() - cpu_before, active))


async def _run(job: Job) -> list[Transfer] | LoopTally:
    connector = aiohttp.TCPConnector(limit=0, ssl=False)  # TLS scenarios: speed, not identity
    async with aiohttp.ClientSession(
        connector=connector, read_bufsize=_READ_BUFSIZE, auto_decompress=False, timeout=_TIMEOUT
    ) as session:
        match job:
            case StreamJob():
                await _sleep_until(job.start_at)
                downloads = (_download(session, job) for _ in range(job.streams))
                return list(await asyncio.gather(*downloads))
            case RangeJob():
                return await _loop(job, job.seed, lambda t, rng: _range_get(session, job, t, rng))
            case MetadataJob():
                return await _loop(job, 0, lambda t, _: _record_get(session, job, t))
    raise TypeError(f"unknown job {job!r}")


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def _download(session: aiohttp.ClientSession, job: StreamJob) -> Transfer:
    first_byte_at = 0.0
    status, source, size, error = 0, "", 0, None
    hasher = xxhash.xxh3_128() if job.xxh3 else None
    try:
        async with session.get(job.url, headers=AUTH) as response:
            status = response.status
            source = response.headers.get(job.source_header, "")
            async for piece in response.content.iter_any():
                if not size:
                    first_byte_at = time.monotonic()
                size += len(piece)
                if hasher is not None:
                    hasher.update(piece)
    except (aiohttp.ClientError, TimeoutError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    done_at = time.monotonic()
    if error is None and status != 200:
        error = f"status {status}"
    elif error is None and size != job.size:
        error = f"received {size} bytes, expected {job.size}"
    elif error is None and hasher is not None and hasher.hexdigest() != job.xxh3:
        error = "wrong bytes: xxh3 of the body does not match the image"
    return Transfer(status, source, size, first_byte_at or done_at, done_at, error)


Request = Callable[[LoopTally, random.Random], Awaitable[None]]


async def _loop(job: RangeJob | MetadataJob, seed: int, request: Request) -> LoopTally:
    """Run the job's `concurrency` request loops from `start_at` until `duration` has passed."""
    tally = LoopTally()
    await _sleep_until(job.start_at)
    deadline = job.start_at + job.duration

    async def one_loop(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        while time.monotonic() < deadline:
            try:
                await request(tally, rng)
            except (aiohttp.ClientError, TimeoutError) as exc:
                tally.fail(f"{type(exc).__name__}: {exc}")
            tally.requests += 1

    await asyncio.gather(*(one_loop(number) for number in range(job.concurrency)))
    return tally


async def _range_get(
    session: aiohttp.ClientSession, job: RangeJob, tally: LoopTally, rng: random.Random
) -> None:
    start = rng.randrange(job.size - job.piece + 1)
    headers = {**AUTH, "Range": f"bytes={start}-{start + job.piece - 1}"}
    async with session.get(job.url, headers=headers) as response:
        body = await response.read()
        source = response.headers.get(job.source_header, "")
        tally.sources[source] = tally.sources.get(source, 0) + 1
    tally.size += len(body)
    if response.status != 206:
        tally.fail(f"status {response.status} for bytes {start}-")
    elif len(body) != job.piece:
        tally.fail(f"{len(body)} bytes for a {job.piece}-byte range at {start}")
    elif job.content is not None and body != _pread(job.content, job.piece, start):
        tally.fail(f"wrong bytes for the range at {start}")


async def _record_get(session: aiohttp.ClientSession, job: MetadataJob, tally: LoopTally) -> None:
    async with session.get(job.url, headers=AUTH) as response:
        body = await response.read()
    tally.size += len(body)
    if response.status != 200:
        tally.fail(f"status {response.status}")
    elif job.image_id is not None and json.loads(body).get("id") != job.image_id:
        tally.fail("the record names another image")


def _pread(path: str, count: int, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, count, offset)
    finally:
        os.close(fd)
