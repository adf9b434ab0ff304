"""One sqlite connection shared by the index's tables, used one statement at a time.

aiosqlite runs statements on one thread, but interleaved cursors from concurrent coroutines
can still trip sqlite3 ("bad parameter or other API misuse"); a lock around each statement,
with its cursor closed before the next, rules that out.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from edgecache.database.schema import Schema, migrate

Row = Sequence[Any]
log = logging.getLogger(__name__)


@contextmanager
def best_effort(what: str) -> Iterator[None]:
    """For bookkeeping that must not fail the request it rides on (a full disk, say)."""
    try:
        yield
    except sqlite3.Error as exc:
        log.warning("could not record %s: %s", what, exc)


class Database:
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, schemas: tuple[Schema, ...]) -> Database:
        """Open (or create) the database and bring its tables to this release's versions;
        IndexFromNewerRelease if a newer release wrote it."""
        connection = await aiosqlite.connect(path)
        try:
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA synchronous=NORMAL")
            await migrate(connection, path, schemas)
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def close(self) -> None:
        async with self._lock:
            await self._connection.close()

    async def write(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        async with self._lock:
            await self._connection.execute(sql, parameters)
            await self._connection.commit()

    async def write_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            await self._connection.executemany(sql, rows)
            await self._connection.commit()

    async def fetch_one(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        async with self._lock, self._connection.execute(sql, parameters) as cursor:
            return await cursor.fetchone()

    async def fetch_all(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        async with self._lock, self._connection.execute(sql, parameters) as cursor:
            return list(await cursor.fetchall())

    async def used_bytes(self) -> int:
        """The bytes the database's live pages take (free pages are reused, not counted)."""
        async with self._lock:
            sizes = []
            for pragma in ("page_count", "freelist_count", "page_size"):
                async with self._connection.execute(f"PRAGMA {pragma}") as cursor:
                    row = await cursor.fetchone()
                    sizes.append(int(row[0]) if row else 0)
        pages, free, page_size = sizes
        return (pages - free) * page_size

    async def changes(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run a write and say how many rows it changed."""
        async with self._lock:
            cursor = await self._connection.execute(sql, parameters)
            await self._connection.commit()
            return cursor.rowcount
