"""Deterministic image bytes for the synthetic Glance, and the digests clients check them by.

Every image the upstream serves is a prefix of one generated file, so the whole data set is
written and hashed once however many image ids and sizes a run uses.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

_BLOCK = 1 << 20
_POOL_BLOCKS = 64
_READ = 8 << 20


@dataclass(frozen=True)
class Digests:
    """What Glance publishes for an image of `size` bytes, plus the xxh3 clients verify with."""

    size: int
    md5: str
    sha512: str
    xxh3: str


def generate(path: Path, size: int, seed: int) -> None:
    """Write `size` pseudo-random bytes: 1 MiB blocks cut at random offsets of a random pool.

    Random bytes are slow to make in Python (~0.4 GB/s), so only a 64 MiB pool is drawn;
    blocks taken from it at unaligned offsets still make every position's content distinct
    enough that a shifted or repeated range cannot pass verification.
    """
    rng = random.Random(seed)
    pool_blocks = min(_POOL_BLOCKS, size // _BLOCK + 1)
    pool = memoryview(b"".join(rng.randbytes(_BLOCK) for _ in range(pool_blocks + 1)))
    with path.open("wb") as out:
        written = 0
        while written < size:
            start = rng.randrange(pool_blocks * _BLOCK)
            count = min(_BLOCK, size - written)
            out.write(pool[start : start + count])
            written += count


def prefix_digests(path: Path, sizes: Iterable[int]) -> dict[int, Digests]:
    """Digests of each prefix of the file with one of `sizes`, each algorithm in its own thread.

    hashlib releases the GIL on large buffers, so md5 and sha512 run on separate cores.
    """
    wanted = sorted(set(sizes))
    factories: dict[str, Callable[[], Any]] = {
        "md5": lambda: hashlib.md5(usedforsecurity=False),
        "sha512": hashlib.sha512,
        "xxh3": xxhash.xxh3_128,
    }
    with ThreadPoolExecutor(len(factories)) as pool:
        futures = {
            name: pool.submit(_hash_prefixes, path, wanted, factory)
            for name, factory in factories.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    return {
        size: Digests(size, results["md5"][size], results["sha512"][size], results["xxh3"][size])
        for size in wanted
    }


def _hash_prefixes(path: Path, sizes: list[int], factory: Callable[[], Any]) -> dict[int, str]:
    hasher = factory()
    found: dict[int, str] = {}
    position = 0
    with path.open("rb", buffering=0) as source:
        for size in sizes:
            while position < size:
                piece = source.read(min(_READ, size - position))
                if not piece:
                    raise ValueError(f"{path} is shorter than {size} bytes")
                hasher.update(piece)
                position += len(piece)
            found[size] = hasher.hexdigest()
    return found
