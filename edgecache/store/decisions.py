"""Remembered authorization decisions: what Glance answered a caller about an image.

Callers are known only by a salted hash of their token (see edgecache.auth); the token itself
is never stored. Every decision and every known token carries an expiry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from edgecache.store.db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    project_id TEXT,
    is_admin   INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    token_hash TEXT NOT NULL,
    image_id   TEXT NOT NULL,
    status     INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (token_hash, image_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS decisions_image ON decisions (image_id);
"""


class DecisionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def remember_token(
        self,
        token_hash: str,
        expires_at: float,
        project_id: str | None = None,
        is_admin: bool = False,
    ) -> None:
        """Glance accepted this token (answered something other than 401)."""
        await self._db.write(
            "INSERT OR REPLACE INTO tokens (token_hash, project_id, is_admin, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (token_hash, project_id, int(is_admin), expires_at),
        )

    async def token_expiry(self, token_hash: str) -> float | None:
        """When a token validated with Keystone expires (None if never validated)."""
        row = await self._db.fetch_one(
            "SELECT expires_at FROM tokens WHERE token_hash = ? AND project_id IS NOT NULL"
            " AND expires_at > ?",
            (token_hash, time.time()),
        )
        return float(row[0]) if row else None

    async def token_known(self, token_hash: str) -> bool:
        row = await self._db.fetch_one(
            "SELECT 1 FROM tokens WHERE token_hash = ? AND expires_at > ?",
            (token_hash, time.time()),
        )
        return row is not None

    async def forget_token(self, token_hash: str) -> None:
        """Glance refused this token (401): nothing it was allowed before stands."""
        await self._db.write("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
        await self._db.write("DELETE FROM decisions WHERE token_hash = ?", (token_hash,))

    async def remember(
        self, token_hash: str, image_ids: Iterable[str], status: int, expires_at: float
    ) -> None:
        await self._db.write_many(
            "INSERT OR REPLACE INTO decisions (token_hash, image_id, status, expires_at)"
            " VALUES (?, ?, ?, ?)",
            [(token_hash, image_id, status, expires_at) for image_id in image_ids],
        )

    async def lookup(self, token_hash: str, image_id: str) -> int | None:
        """The status Glance answered this caller for this image, if still valid."""
        row = await self._db.fetch_one(
            "SELECT status FROM decisions WHERE token_hash = ? AND image_id = ? AND expires_at > ?",
            (token_hash, image_id, time.time()),
        )
        return int(row[0]) if row else None

    async def allowed(self, image_id: str) -> list[tuple[str, str | None, bool]]:
        """(token hash, project, is admin) of every caller remembered as allowed to see it."""
        rows = await self._db.fetch_all(
            "SELECT d.token_hash, t.project_id, COALESCE(t.is_admin, 0) FROM decisions d"
            " LEFT JOIN tokens t ON t.token_hash = d.token_hash"
            " WHERE d.image_id = ? AND d.status = 200",
            (image_id,),
        )
        return [(str(r[0]), r[1], bool(r[2])) for r in rows]

    async def forget(self, token_hash: str, image_id: str) -> None:
        await self._db.write(
            "DELETE FROM decisions WHERE token_hash = ? AND image_id = ?", (token_hash, image_id)
        )

    async def forget_image(self, image_id: str) -> None:
        await self._db.write("DELETE FROM decisions WHERE image_id = ?", (image_id,))

    async def purge_expired(self) -> None:
        now = time.time()
        await self._db.write("DELETE FROM decisions WHERE expires_at <= ?", (now,))
        await self._db.write("DELETE FROM tokens WHERE expires_at <= ?", (now,))
