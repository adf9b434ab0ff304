"""Remembered Glance documents (version documents, schemas, image records, lists, members).

A document is stored per `scope`: "*" for those that are the same for every caller who may see
them (access to an image record is decided separately), or the caller's scope for answers that
depend on who asks (lists, member lists).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from edgecache.store.db import Database

SHARED_SCOPE = "*"
_BATCH = 500  # parameters per statement (sqlite allows 999 in older builds)
SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    scope        TEXT NOT NULL,
    path         TEXT NOT NULL,
    image_id     TEXT,
    status       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    fetched_at   REAL NOT NULL,
    PRIMARY KEY (scope, path)
);
CREATE INDEX IF NOT EXISTS documents_image ON documents (image_id);
"""


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
