"""The prefetch jobs' table in the index database: which images are queued, since when.

A job holds no credentials: who it fetches as is decided when it starts
(edgecache.prefetch.credentials). A job stays in the table until its image is cached, it is
dequeued, or it can never be cached (gone, not cacheable, failed); so one that was running
when the daemon stopped (or was killed) is queued again by the next start.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.database.connection import Database
from edgecache.database.schema import Schema

SCHEMA = Schema(
    owner="prefetch_jobs",
    migrations=(
        """
        CREATE TABLE prefetch_jobs (
            image_id  TEXT PRIMARY KEY,
            size      INTEGER,
            queued_at REAL NOT NULL
        );
        """,
    ),
    version_of_tables=lambda tables: 1 if "prefetch_jobs" in tables else 0,
)


@dataclass(frozen=True)
class Job:
    image_id: str
    size: int | None  # Glance's size of the image when it was queued
    queued_at: float  # wall clock


class JobStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def all(self) -> list[Job]:
        """Every job, the oldest first."""
        rows = await self._db.fetch_all(
            "SELECT image_id, size, queued_at FROM prefetch_jobs ORDER BY queued_at, rowid"
        )
        return [
            Job(str(row[0]), None if row[1] is None else int(row[1]), float(row[2])) for row in rows
        ]

    async def add(self, job: Job) -> None:
        await self._db.write(
            "INSERT OR IGNORE INTO prefetch_jobs (image_id, size, queued_at) VALUES (?, ?, ?)",
            (job.image_id, job.size, job.queued_at),
        )

    async def remove(self, image_id: str) -> None:
        await self._db.write("DELETE FROM prefetch_jobs WHERE image_id = ?", (image_id,))

    async def clear(self) -> None:
        await self._db.write("DELETE FROM prefetch_jobs")
