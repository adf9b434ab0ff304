"""Remembered authorization decisions: what Glance answered an identity about an image.

Three tables:
- `identities`: callers Glance accepted (answered anything but 401), with their project, roles
  and until when what was learnt about them may be used;
- `caller_tokens`: which identity a token (known only by a keyed hash, see identity.py)
  belongs to, and until when Keystone (or the decision TTL) says the token is good;
- `grants`: Glance's answer to an identity about one image, per action (`image`: may it see the
  record, Glance's `get_image`; `download`: may it have the bytes, Glance's `download_image`).

A decision is used for a token only while the token's own row is valid, so it never outlives
what Keystone said about the token that presents it. No token is ever stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

from edgecache.authorization.identity import Identity
from edgecache.database.connection import Database
from edgecache.database.schema import Schema

# A token row is kept this long past its expiry, so that a token known to have expired is
# answered 401 while the uplink is down rather than 503 (never seen here).
EXPIRED_TOKENS_KEPT = 24 * 3600.0

# Migrated tokens that Keystone never vouched for are kept at most this long from the upgrade:
# Keystone's default token lifetime (the release that wrote them used them for 12 hours).
_MIGRATED_TOKEN_LIFE = 3600
SCHEMA = Schema(
    owner="decisions",
    migrations=(
        # 2026-11-24: decisions per token (known by its keyed hash), the record decision only.
        """
        CREATE TABLE tokens (
            token_hash TEXT PRIMARY KEY,
            project_id TEXT,
            is_admin   INTEGER NOT NULL DEFAULT 0,
            expires_at REAL NOT NULL
        );
        CREATE TABLE decisions (
            token_hash TEXT NOT NULL,
            image_id   TEXT NOT NULL,
            status     INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (token_hash, image_id)
        ) WITHOUT ROWID;
        CREATE INDEX decisions_image ON decisions (image_id);
        """,
        # 2026-12-01: decisions per identity and action. A token of that release becomes its
        # own identity ("tk:<hash>", with the project Keystone gave it, if any). That release
        # served an image's bytes on the record decision alone, so its "allowed" decisions
        # carry over as downloads too, for at most the life of the token that earned them.
        f"""
        CREATE TABLE identities (
            identity   TEXT PRIMARY KEY,
            project_id TEXT,
            roles      TEXT NOT NULL DEFAULT '[]',
            is_admin   INTEGER NOT NULL DEFAULT 0,
            expires_at REAL NOT NULL
        );
        CREATE TABLE caller_tokens (
            token_hash TEXT PRIMARY KEY,
            identity   TEXT NOT NULL,
            validated  INTEGER NOT NULL DEFAULT 0,
            expires_at REAL NOT NULL
        );
        CREATE TABLE grants (
            identity   TEXT NOT NULL,
            image_id   TEXT NOT NULL,
            action     TEXT NOT NULL,
            status     INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (identity, image_id, action)
        ) WITHOUT ROWID;
        CREATE INDEX grants_image ON grants (image_id);
        INSERT INTO identities (identity, project_id, roles, is_admin, expires_at)
            SELECT 'tk:' || token_hash, project_id,
                   CASE WHEN is_admin THEN '["admin"]' ELSE '[]' END, is_admin, expires_at
            FROM tokens;
        INSERT INTO caller_tokens (token_hash, identity, validated, expires_at)
            SELECT token_hash, 'tk:' || token_hash, project_id IS NOT NULL,
                   CASE WHEN project_id IS NOT NULL THEN expires_at
                        ELSE MIN(expires_at, strftime('%s', 'now') + {_MIGRATED_TOKEN_LIFE}) END
            FROM tokens;
        INSERT INTO grants (identity, image_id, action, status, expires_at)
            SELECT 'tk:' || token_hash, image_id, 'image', status, expires_at FROM decisions;
        INSERT INTO grants (identity, image_id, action, status, expires_at)
            SELECT c.identity, d.image_id, 'download', 200, MIN(d.expires_at, c.expires_at)
            FROM decisions d JOIN caller_tokens c ON c.token_hash = d.token_hash
            WHERE d.status = 200;
        DROP TABLE decisions;
        DROP TABLE tokens;
        """,
    ),
    version_of_tables=lambda tables: (
        2 if "caller_tokens" in tables else 1 if "tokens" in tables else 0
    ),
)


@dataclass(frozen=True)
class TokenRow:
    identity: str
    validated: bool  # Keystone vouched for the token (else Glance's answer alone)
    expires_at: float


class DecisionStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def remember_token(
        self, token_hash: str, identity: str, expires_at: float, *, validated: bool
    ) -> None:
        await self._db.write(
            "INSERT OR REPLACE INTO caller_tokens (token_hash, identity, validated, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (token_hash, identity, int(validated), expires_at),
        )

    async def token(self, token_hash: str) -> TokenRow | None:
        """The identity a token belongs to and until when it is good (perhaps past: a token
        known to have expired)."""
        row = await self._db.fetch_one(
            "SELECT identity, validated, expires_at FROM caller_tokens WHERE token_hash = ?",
            (token_hash,),
        )
        return TokenRow(str(row[0]), bool(row[1]), float(row[2])) if row else None

    async def forget_token(self, token_hash: str) -> None:
        """Glance refused this token (401): it stands for nobody any more."""
        await self._db.write("DELETE FROM caller_tokens WHERE token_hash = ?", (token_hash,))

    async def accept(self, identity: Identity, expires_at: float) -> None:
        """Glance accepted this identity; what it learns about it may be used until then."""
        await self._db.write(
            "INSERT OR REPLACE INTO identities (identity, project_id, roles, is_admin, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                identity.key,
                identity.project_id,
                json.dumps(sorted(identity.roles)),
                int(identity.is_admin),
                expires_at,
            ),
        )

    async def identity(self, key: str) -> Identity | None:
        """An identity Glance accepted, while that is still to be relied on."""
        row = await self._db.fetch_one(
            "SELECT project_id, roles FROM identities WHERE identity = ? AND expires_at > ?",
            (key, time.time()),
        )
        if row is None:
            return None
        return Identity(key, row[0], frozenset(json.loads(row[1])))

    async def forget_identity(self, key: str) -> None:
        await self._db.write("DELETE FROM identities WHERE identity = ?", (key,))
        await self._db.write("DELETE FROM grants WHERE identity = ?", (key,))

    async def remember(
        self, identity: str, action: str, image_ids: Iterable[str], status: int, expires_at: float
    ) -> None:
        await self._db.write_many(
            "INSERT OR REPLACE INTO grants (identity, image_id, action, status, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(identity, image_id, action, status, expires_at) for image_id in image_ids],
        )

    async def lookup(self, identity: str, image_id: str, action: str) -> int | None:
        """The status Glance answered this identity for this image and action, if still valid."""
        row = await self._db.fetch_one(
            "SELECT status FROM grants WHERE identity = ? AND image_id = ? AND action = ?"
            " AND expires_at > ?",
            (identity, image_id, action, time.time()),
        )
        return int(row[0]) if row else None

    async def allowed(self, image_id: str) -> list[tuple[str, str | None, bool]]:
        """(identity, project, is admin) of every identity remembered as allowed anything on
        the image."""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT g.identity, i.project_id, COALESCE(i.is_admin, 0) FROM grants g"
            " LEFT JOIN identities i ON i.identity = g.identity"
            " WHERE g.image_id = ? AND g.status = 200",
            (image_id,),
        )
        return [(str(r[0]), r[1], bool(r[2])) for r in rows]

    async def forget(self, identity: str, image_id: str, action: str | None = None) -> None:
        """The remembered answers about the image for this identity (to `action`, else all)."""
        if action is None:
            await self._db.write(
                "DELETE FROM grants WHERE identity = ? AND image_id = ?", (identity, image_id)
            )
        else:
            await self._db.write(
                "DELETE FROM grants WHERE identity = ? AND image_id = ? AND action = ?",
                (identity, image_id, action),
            )

    async def forget_image(self, image_id: str) -> None:
        await self._db.write("DELETE FROM grants WHERE image_id = ?", (image_id,))

    async def drop_soonest_expiring(self, count: int) -> int:
        """Drop the `count` remembered answers that would expire first; how many were."""
        return await self._db.changes(
            "DELETE FROM grants WHERE (identity, image_id, action) IN"
            " (SELECT identity, image_id, action FROM grants ORDER BY expires_at LIMIT ?)",
            (count,),
        )

    async def purge_expired(self) -> None:
        now = time.time()
        for table, kept_after_expiry in (
            ("grants", 0.0),
            ("caller_tokens", EXPIRED_TOKENS_KEPT),
            ("identities", 0.0),
        ):
            await self._db.write(
                f"DELETE FROM {table} WHERE expires_at <= ?", (now - kept_after_expiry,)
            )
