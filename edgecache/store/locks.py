"""One asyncio lock per image, made when first asked for and dropped when nobody wants it."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ImageLocks:
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: Counter[str] = Counter()  # holding or waiting

    @asynccontextmanager
    async def hold(self, image_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(image_id, asyncio.Lock())
        self._users[image_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._users[image_id] -= 1
            if not self._users[image_id]:
                del self._users[image_id], self._locks[image_id]

    def held(self, image_id: str) -> bool:
        lock = self._locks.get(image_id)
        return lock is not None and lock.locked()
