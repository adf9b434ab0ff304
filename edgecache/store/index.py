"""The cache index: one sqlite database (WAL) reached through aiosqlite.

A row in `blobs` exists only for a file that was fully verified and renamed into place, so
the index never names an unverified copy. WAL with synchronous=NORMAL: a power cut may lose the
newest rows, which only turns their files into orphans that start-up removes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from edgecache.store import decisions, documents

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    image_id      TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    checksum      TEXT,
    hash_algo     TEXT,
    hash_value    TEXT,
    chunk_size    INTEGER NOT NULL,
    chunk_digests BLOB NOT NULL,
    created_at    REAL NOT NULL,
    last_access   REAL NOT NULL,
    hits          INTEGER NOT NULL DEFAULT 0,
    pinned        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blobs_lru ON blobs (pinned, last_access);
"""
_COLUMNS = (
    "image_id, size, checksum, hash_algo, hash_value, chunk_size, chunk_digests,"
    " created_at, last_access, hits, pinned"
)


@dataclass(frozen=True)
class BlobEntry:
    """A verified image copy on disk."""

    image_id: str
    size: int
    checksum: str | None
    hash_algo: str | None
    hash_value: str | None
    chunk_size: int
    chunk_digests: bytes
    created_at: float
    last_access: float
    hits: int = 0
    pinned: bool = False


def _entry(row: Iterable[object]) -> BlobEntry:
    values = list(row)
    values[-1] = bool(values[-1])
    return BlobEntry(*values)  # type: ignore[arg-type]


class Index:
    """The database: blob rows here, remembered documents and decisions beside them."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        self.documents = documents.DocumentStore(connection)
        self.decisions = decisions.DecisionStore(connection)

    @classmethod
    async def open(cls, path: Path) -> Index:
        connection = await aiosqlite.connect(path)
        await connection.execute("PRAGMA journal_mode=WAL")
        await connection.execute("PRAGMA synchronous=NORMAL")
        for schema in (_SCHEMA, documents.SCHEMA, decisions.SCHEMA):
            await connection.executescript(schema)
        await connection.commit()
        return cls(connection)

    async def close(self) -> None:
        await self._db.close()

    async def get(self, image_id: str) -> BlobEntry | None:
        async with self._db.execute(
            f"SELECT {_COLUMNS} FROM blobs WHERE image_id = ?", (image_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return _entry(row) if row else None

    async def all(self) -> list[BlobEntry]:
        async with self._db.execute(f"SELECT {_COLUMNS} FROM blobs ORDER BY last_access") as cursor:
            return [_entry(row) for row in await cursor.fetchall()]

    async def add(self, entry: BlobEntry) -> None:
        await self._db.execute(
            f"INSERT OR REPLACE INTO blobs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry.image_id,
                entry.size,
                entry.checksum,
                entry.hash_algo,
                entry.hash_value,
                entry.chunk_size,
                entry.chunk_digests,
                entry.created_at,
                entry.last_access,
                entry.hits,
                int(entry.pinned),
            ),
        )
        await self._db.commit()

    async def remove(self, image_id: str) -> None:
        await self._db.execute("DELETE FROM blobs WHERE image_id = ?", (image_id,))
        await self._db.commit()

    async def record_hit(self, image_id: str, when: float | None = None) -> None:
        await self._db.execute(
            "UPDATE blobs SET hits = hits + 1, last_access = ? WHERE image_id = ?",
            (time.time() if when is None else when, image_id),
        )
        await self._db.commit()

    async def total_size(self) -> int:
        async with self._db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def eviction_order(self) -> list[tuple[str, int]]:
        """Unpinned blobs, least recently used first."""
        async with self._db.execute(
            "SELECT image_id, size FROM blobs WHERE pinned = 0 ORDER BY last_access, image_id"
        ) as cursor:
            return [(str(r[0]), int(r[1])) for r in await cursor.fetchall()]
