"""Versioned tables in the index database: each owner's migrations, applied once, in order.

Every release opens a cache directory made by any earlier one and keeps what it holds: the
stored copies, the remembered documents and Glance's remembered decisions. Each owner of
tables (the blob index, the remembered documents, the decisions) lists its migrations, the
first creating its tables as the first release had them; `schema_versions` records how many
have run. A database made before versions were recorded (releases up to 2026-12-01) is placed
by the tables it has. A database from a newer release is refused, untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

_VERSIONS = "CREATE TABLE IF NOT EXISTS schema_versions (owner TEXT PRIMARY KEY, version INTEGER)"


class IndexFromNewerRelease(RuntimeError):
    """The cache was written by a release that knows migrations this one does not."""

    def __init__(self, path: Path, owner: str, found: int, known: int) -> None:
        super().__init__(
            f"The cache index {path} was written by a newer release of edgecache (its {owner} "
            f"tables are at version {found}; this release knows up to {known}), so it was left "
            "untouched. Run that release again, or give this one another cache directory."
        )


@dataclass(frozen=True)
class Schema:
    owner: str
    # migrations[n] takes the owner's tables from version n to n + 1 (0: no tables yet). Each
    # runs in one transaction with the new version recorded, so a crash leaves either.
    migrations: tuple[str, ...]
    # For databases made before versions were recorded: the version their tables are at.
    version_of_tables: Callable[[frozenset[str]], int]

    @property
    def latest(self) -> int:
        return len(self.migrations)


async def migrate(
    connection: aiosqlite.Connection, path: Path, schemas: tuple[Schema, ...]
) -> None:
    """Bring every owner's tables to its latest version, or refuse a newer database whole."""
    await connection.execute(_VERSIONS)
    async with connection.execute("SELECT owner, version FROM schema_versions") as cursor:
        recorded = {str(owner): int(version) for owner, version in await cursor.fetchall()}
    async with connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
        tables = frozenset(str(row[0]) for row in await cursor.fetchall())
    current = {
        schema.owner: recorded.get(schema.owner, schema.version_of_tables(tables))
        for schema in schemas
    }
    for schema in schemas:
        if current[schema.owner] > schema.latest:
            raise IndexFromNewerRelease(path, schema.owner, current[schema.owner], schema.latest)
    for schema in schemas:
        for version in range(current[schema.owner], schema.latest):
            await connection.executescript(
                f"BEGIN;\n{schema.migrations[version]}\n"
                "INSERT OR REPLACE INTO schema_versions (owner, version)"
                f" VALUES ('{schema.owner}', {version + 1});\nCOMMIT;"
            )
        if schema.owner not in recorded and current[schema.owner] == schema.latest:
            await connection.execute(
                "INSERT INTO schema_versions (owner, version) VALUES (?, ?)",
                (schema.owner, schema.latest),
            )
    await connection.commit()
