"""glibc's allocator told to keep the daemon's large buffers for reuse instead of returning them.

edgecache allocates buffers of megabytes all the time: the pieces of a file sent over TLS and
their ciphertext (4 MiB each, several copies on their way through asyncio's TLS layer), and a
fill's chunks. glibc adapts its thresholds to that only half-way: a freed 4 MiB buffer raises
its mmap threshold to 4 MiB and its trim threshold to 8 MiB, so the next ciphertext, a few
bytes larger, is mapped afresh, and a few freed pieces together exceed the trim threshold and
go back to the kernel. Each time the kernel then zeroes and faults in new pages: `perf` showed
page faults and page clearing in 6% of a TLS hit's CPU. With the thresholds fixed, freed buffers
stay in the heap and are reused (TLS hits: 1.8-2.1 -> 1.3-1.5 CPU-s per GiB,
docs/performance.md).

The cost: at most TRIM_THRESHOLD of free memory kept per allocator arena, and buffers that
were mapped before now share heaps (32 hit streams: peak RSS 69 -> 77 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# Buffers up to this size come from the heap, not from mmap (glibc's own upper bound for the
# threshold it adapts).
MMAP_THRESHOLD = 32 << 20
# Free memory at the top of a heap beyond this goes back to the kernel.
TRIM_THRESHOLD = 16 << 20


def keep_large_buffers() -> bool:
    """Fix glibc's thresholds; False where the C library is not glibc or refuses them."""
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:  # not glibc (musl has no mallopt)
        return False
    applied = True
    for parameter, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if mallopt(parameter, value) != 1:
            log.info("the C library refused mallopt(%d, %d); keeping its default", parameter, value)
            applied = False
    return applied
