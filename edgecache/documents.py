"""Remembered Glance documents (version documents, schemas, image records, lists, members).

A document is stored per `scope`: "*" for those that are the same for every caller who may see
them (access to an image record is decided separately), or the caller's scope for answers that
depend on who asks (lists, member lists).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgecache.database.connection import Database
from edgecache.database.schema import Schema

SHARED_SCOPE = "*"
_BATCH = 500  # parameters per statement (sqlite allows 999 in older builds)
# The documents every client reads before anything else, a handful: never dropped.
_BOOT_DOCUMENT = "scope = '*' AND image_id IS NULL AND path NOT LIKE '/v2/images%'"
SCHEMA = Schema(
    owner="documents",
    migrations=(
        # 2026-11-24: per-caller documents (lists, member lists) scoped by the token's hash.
        """
        CREATE TABLE documents (
            scope        TEXT NOT NULL,
            path         TEXT NOT NULL,
            image_id     TEXT,
            status       INTEGER NOT NULL,
            content_type TEXT NOT NULL,
            body         BLOB NOT NULL,
            fetched_at   REAL NOT NULL,
            PRIMARY KEY (scope, path)
        );
        CREATE INDEX documents_image ON documents (image_id);
        """,
        # Per-caller documents belong to the caller's identity (a token's own is "tk:<hash>",
        # edgecache.authorization.identity); shared documents are kept per path, not per query.
        """
        UPDATE documents SET scope = 'tk:' || scope WHERE scope NOT IN ('*', 'anonymous');
        DELETE FROM documents WHERE scope = 'anonymous';
        DELETE FROM documents WHERE scope = '*' AND instr(path, '?') > 0;
        CREATE INDEX documents_age ON documents (scope, fetched_at);
        """,
    ),
    version_of_tables=lambda tables: 1 if "documents" in tables else 0,
)


# Per-caller documents (lists, member lists) remembered per identity, the most recently had
# from Glance first; older ones are dropped.
PER_IDENTITY = 16


@dataclass(frozen=True)
class Kept:
    """Under what a document is remembered: its path (with the query only where it selects
    the answer), and whether it is the caller's own view (remembered per identity)."""

    path: str
    per_caller: bool


@dataclass(frozen=True)
class Document:
    status: int
    content_type: str
    body: bytes
    fetched_at: float

    @property
    def age(self) -> int:
        return max(0, int(time.time() - self.fetched_at))


class DocumentStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(
        self, scope: str, path: str, document: Document, image_id: str | None = None
    ) -> None:
        await self._db.write(
            "INSERT OR REPLACE INTO documents"
            " (scope, path, image_id, status, content_type, body, fetched_at)"
            " VALUES (?,?,?,?,?,?,?)",
            (
                scope,
                path,
                image_id,
                document.status,
                document.content_type,
                document.body,
                document.fetched_at,
            ),
        )

    async def get(self, scope: str, path: str) -> Document | None:
        row = await self._db.fetch_one(
            "SELECT status, content_type, body, fetched_at FROM documents"
            " WHERE scope = ? AND path = ?",
            (scope, path),
        )
        return Document(int(row[0]), str(row[1]), bytes(row[2]), float(row[3])) if row else None

    async def keep_newest(self, scope: str, count: int) -> None:
        """Drop all but the `count` documents of `scope` most recently had from Glance."""
        await self._db.write(
            "DELETE FROM documents WHERE scope = ? AND path NOT IN (SELECT path FROM documents"
            " WHERE scope = ? ORDER BY fetched_at DESC LIMIT ?)",
            (scope, scope, count),
        )

    async def purge_older_than(self, cutoff: float) -> int:
        """Drop the documents last had from Glance before `cutoff` (wall clock), but the
        version documents and schemas every client reads; how many were dropped."""
        return await self._db.changes(
            f"DELETE FROM documents WHERE fetched_at < ? AND NOT ({_BOOT_DOCUMENT})", (cutoff,)
        )

    async def drop_oldest(self, count: int) -> int:
        """Drop the `count` documents least recently had from Glance (per-caller views first,
        then image records), never the version documents and schemas."""
        return await self._db.changes(
            "DELETE FROM documents WHERE rowid IN (SELECT rowid FROM documents"
            f" WHERE NOT ({_BOOT_DOCUMENT}) ORDER BY scope = ?, fetched_at LIMIT ?)",
            (SHARED_SCOPE, count),
        )

    async def forget_image(self, image_id: str) -> None:
        await self._db.write("DELETE FROM documents WHERE image_id = ?", (image_id,))

    async def fetched_at(self, scope: str, paths: list[str]) -> dict[str, float]:
        """When each of these documents (those remembered) was last had from Glance."""
        found: dict[str, float] = {}
        for start in range(0, len(paths), _BATCH):
            batch = paths[start : start + _BATCH]
            rows = await self._db.fetch_all(
                "SELECT path, fetched_at FROM documents WHERE scope = ? AND path IN"
                f" ({','.join('?' * len(batch))})",
                (scope, *batch),
            )
            found.update((str(row[0]), float(row[1])) for row in rows)
        return found

    async def image_ids(self) -> list[str]:
        rows = await self._db.fetch_all(
            "SELECT DISTINCT image_id FROM documents WHERE image_id IS NOT NULL"
        )
        return [str(row[0]) for row in rows]
