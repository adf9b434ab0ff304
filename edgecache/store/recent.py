"""Chunks re-hashed lately, so a burst of readers of one hot image hashes it once.

A bit that flips on disk shows only when its page is read from disk again; a chunk whose pages
stayed in the page cache since it was checked still is the chunk that was checked. So a chunk
checked within the last `horizon` seconds (same file: device, inode, mtime) is not re-hashed,
and a copy changed through the filesystem (a new mtime) is always checked again. A fill's
chunks count as checked when it is committed: its pages hold the very bytes that were hashed.
"""

from __future__ import annotations

import os
import time

from edgecache.lru import LruDict

ChunkKey = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, chunk number


class RecentlyVerified:
    def __init__(self, horizon: float, capacity: int = 200_000) -> None:
        self._horizon = horizon
        self._checked: LruDict[ChunkKey, float] = LruDict(capacity)

    def fresh(self, key: ChunkKey) -> bool:
        checked = self._checked.get(key)
        return checked is not None and time.monotonic() - checked < self._horizon

    def record(self, key: ChunkKey) -> None:
        if self._horizon > 0:
            self._checked[key] = time.monotonic()

    def record_copy(self, fd: int, chunks: int) -> None:
        """Mark every chunk of a copy that was just written from the bytes that were hashed."""
        stat = os.fstat(fd)
        for chunk in range(chunks):
            self.record((stat.st_dev, stat.st_ino, stat.st_mtime_ns, chunk))
