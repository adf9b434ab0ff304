"""The cache index: one sqlite database (WAL) reached through aiosqlite.

A row in `blobs` exists only for a file that was fully verified and renamed into place, so
the index never names an unverified copy. WAL with synchronous=NORMAL: a power cut may lose the
newest rows, which only turns their files into orphans that start-up removes.

The rows are also kept in memory, so the lookup every data request makes, and the size
checks and the order of eviction (which every fill's reservation waits for under the evictor's
lock), never wait for the database thread (which, under load, waits for the interpreter lock
behind the event loop). Hit counts and access times are written to the database now and then;
`all()` reads them from there, `eviction_order()` from memory.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from edgecache.database.connection import Database
from edgecache.database.schema import Schema

SCHEMA = Schema(
    owner="blobs",
    migrations=(
        """
        CREATE TABLE blobs (
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
        CREATE INDEX blobs_lru ON blobs (pinned, last_access);
        """,
    ),
    version_of_tables=lambda tables: 1 if "blobs" in tables else 0,
)
HIT_FLUSH_SECONDS = 5.0
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
    # Which commit of this image made the copy (in this process; 0 for copies found at
    # start-up): a late step decided about one copy must not touch a newer one.
    generation: int = 0


def _entry(row: Iterable[object]) -> BlobEntry:
    values = list(row)
    values[-1] = bool(values[-1])
    return BlobEntry(*values)  # type: ignore[arg-type]


class Index:
    """The blob rows. The database may hold other owners' tables beside them (the app opens
    the remembered documents and decisions there); the index knows nothing of them."""

    def __init__(self, db: Database, entries: Iterable[BlobEntry]) -> None:
        self._db = db
        self._entries = {entry.image_id: entry for entry in entries}
        # Hits are counted in memory and written together now and then: a hit costs no
        # database write of its own. Listings and eviction write them out first.
        self._hits: dict[str, tuple[int, float]] = {}  # image -> (new hits, last access)
        self._hits_since = time.monotonic()

    @property
    def database(self) -> Database:
        return self._db

    @classmethod
    async def open(cls, path: Path, beside: tuple[Schema, ...] = ()) -> Index:
        """Open the index at `path`, with other owners' tables `beside` the blob rows."""
        db = await Database.open(path, (SCHEMA, *beside))
        rows = await db.fetch_all(f"SELECT {_COLUMNS} FROM blobs")
        return cls(db, (_entry(row) for row in rows))

    async def close(self) -> None:
        await self.flush_hits()
        await self._db.close()

    async def get(self, image_id: str) -> BlobEntry | None:
        """The stored copy of an image (its hits and last access as of the last flush)."""
        return self._entries.get(image_id)

    def image_ids(self) -> list[str]:
        """The images that have a stored copy."""
        return list(self._entries)

    async def all(self) -> list[BlobEntry]:
        """Every copy, least recently used first (a row being added or removed right now may
        be left out)."""
        await self.flush_hits()
        rows = await self._db.fetch_all(f"SELECT {_COLUMNS} FROM blobs ORDER BY last_access")
        entries = (_entry(row) for row in rows)
        return [
            dataclasses.replace(entry, generation=known.generation)
            for entry in entries
            if (known := self._entries.get(entry.image_id)) is not None
        ]

    async def add(self, entry: BlobEntry) -> None:
        await self._db.write(
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
        self._entries[entry.image_id] = entry

    async def remove(self, image_id: str) -> None:
        self._entries.pop(image_id, None)
        await self._db.write("DELETE FROM blobs WHERE image_id = ?", (image_id,))

    async def record_hit(self, image_id: str) -> None:
        if not self._hits:
            self._hits_since = time.monotonic()
        count, _ = self._hits.get(image_id, (0, 0.0))
        self._hits[image_id] = (count + 1, time.time())
        if time.monotonic() - self._hits_since >= HIT_FLUSH_SECONDS:
            await self.flush_hits()

    async def flush_hits(self) -> None:
        pending, self._hits = self._hits, {}
        for image_id, (count, when) in pending.items():  # memory first: eviction reads it
            if (entry := self._entries.get(image_id)) is not None:
                self._entries[image_id] = dataclasses.replace(
                    entry, hits=entry.hits + count, last_access=max(entry.last_access, when)
                )
        if pending:
            await self._db.write_many(
                "UPDATE blobs SET hits = hits + ?, last_access = MAX(last_access, ?)"
                " WHERE image_id = ?",
                [(count, when, image_id) for image_id, (count, when) in pending.items()],
            )

    async def set_pinned(self, image_id: str, pinned: bool) -> bool:
        """Protect a copy from eviction (or stop protecting it); False if it is not stored."""
        if image_id not in self._entries:
            return False
        await self._db.write(
            "UPDATE blobs SET pinned = ? WHERE image_id = ?", (int(pinned), image_id)
        )
        if (current := self._entries.get(image_id)) is not None:  # a newer copy, maybe
            self._entries[image_id] = dataclasses.replace(current, pinned=pinned)
        return True

    async def stats(self) -> tuple[int, int]:
        """How many copies there are and their total size."""
        return len(self._entries), await self.total_size()

    async def total_size(self) -> int:
        return sum(entry.size for entry in self._entries.values())

    async def eviction_order(self) -> list[tuple[str, int]]:
        """Unpinned blobs, least recently used first."""
        unpinned = [entry for entry in self._entries.values() if not entry.pinned]
        unpinned.sort(key=lambda entry: (self._last_access(entry), entry.image_id))
        return [(entry.image_id, entry.size) for entry in unpinned]

    def _last_access(self, entry: BlobEntry) -> float:
        pending = self._hits.get(entry.image_id)
        return max(entry.last_access, pending[1]) if pending else entry.last_access
