"""Authorization: Glance decides; edgecache remembers its decisions for when the uplink is down.

Callers are identified by an HMAC of their token under a per-installation secret, so neither
the index nor the logs ever hold a token, and a stolen index cannot be matched against tokens
without the secret file.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from edgecache.headers import AUTH_TOKEN, identity
from edgecache.keystone import Keystone
from edgecache.lru import LruDict
from edgecache.singleflight import SingleFlight
from edgecache.store.decisions import DecisionStore
from edgecache.store.documents import SHARED_SCOPE, DocumentStore

ANONYMOUS_SCOPE = "anonymous"
SECRET_BYTES = 32
RECENT_CAPACITY = 100_000
# An unchanged answer is written again at most this often (it pushes the expiry forward).
REWRITE_AFTER = 60.0
# Glance's answers that are decisions about a caller and an image (not failures).
DECISION_STATUSES = frozenset({200, 403, 404})
_OPEN_VISIBILITIES = frozenset({"public", "community"})


class TokenHasher:
    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def from_file(cls, path: Path) -> TokenHasher:
        """Load the installation's secret, creating it (mode 0600) on first start.

        Written to a temporary file and renamed into place, so a crash never leaves an empty
        or partial key behind; one that is too short anyway is replaced.
        """
        try:
            secret = path.read_bytes()
        except FileNotFoundError:
            secret = b""
        if len(secret) >= SECRET_BYTES:
            return cls(secret)
        secret = secrets.token_bytes(SECRET_BYTES)
        partial = path.with_name(path.name + ".tmp")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secret)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        return cls(secret)

    def hash(self, token: str) -> str:
        # aiohttp hands bytes that are not UTF-8 over as surrogate escapes: hash them as sent.
        return hmac.new(self._secret, token.encode("utf-8", "surrogateescape"), sha256).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is asking: the headers to forward on their behalf and their token's hash."""

    headers: dict[str, str]
    token_hash: str | None

    @property
    def scope(self) -> str:
        """Whose view a caller-dependent document (a list) belongs to."""
        return self.token_hash or ANONYMOUS_SCOPE


class Authority:
    def __init__(
        self,
        *,
        decisions: DecisionStore,
        documents: DocumentStore,
        hasher: TokenHasher,
        ttl: float,
        keystone: Keystone | None = None,
    ) -> None:
        self._decisions = decisions
        self._documents = documents
        self._hasher = hasher
        self._ttl = ttl
        self._keystone = keystone
        # What was written lately, so repeated identical answers cost no database write:
        # token hash -> (written at, expires at); (token hash, image) -> (status, decided at,
        # written at). Both monotonic clocks but `expires at`.
        self._tokens_written: LruDict[str, tuple[float, float]] = LruDict(RECENT_CAPACITY)
        self._remembering: SingleFlight[str, float] = SingleFlight()
        self._decided: LruDict[tuple[str, str], tuple[int, float, float]] = LruDict(RECENT_CAPACITY)

    def caller(self, headers: Mapping[str, str]) -> Caller:
        forwarded = identity(headers)
        token = forwarded.get(AUTH_TOKEN)
        return Caller(forwarded, self._hasher.hash(token) if token else None)

    async def observe(self, caller: Caller, status: int, image_ids: list[str]) -> None:
        """Learn from Glance's answer to `caller` about `image_ids` (may be empty)."""
        if caller.token_hash is None:
            return
        if status == 401:
            self._tokens_written.pop(caller.token_hash, None)
            await self._decisions.forget_token(caller.token_hash)
            return
        if status >= 500:
            return
        now = time.monotonic()
        written = self._tokens_written.get(caller.token_hash)
        if written is not None and now - written[0] < REWRITE_AFTER:
            expires_at = written[1]
        else:
            expires_at = await self._remember_token_once(caller, caller.token_hash)
        if not image_ids or status not in DECISION_STATUSES:
            return
        stale = []
        for image_id in image_ids:
            key = (caller.token_hash, image_id)
            known = self._decided.get(key)
            fresh_write = known is not None and now - known[2] < REWRITE_AFTER
            if fresh_write and known is not None and known[0] == status:
                self._decided[key] = (status, now, known[2])
            else:
                stale.append(image_id)
                self._decided[key] = (status, now, now)
        if stale:
            await self._decisions.remember(caller.token_hash, stale, status, expires_at)

    def forget_recent(self) -> None:
        """Rows were deleted behind our back (revalidation): write the next answers again."""
        self._tokens_written.clear()
        self._decided.clear()

    def just_decided(self, caller: Caller, image_id: str, within: float) -> int | None:
        """Glance's answer to this caller about this image, if it gave it `within` seconds."""
        if caller.token_hash is None:
            return None
        known = self._decided.get((caller.token_hash, image_id))
        return known[0] if known is not None and time.monotonic() - known[1] < within else None

    async def _remember_token_once(self, caller: Caller, token_hash: str) -> float:
        """Remember the token once for a burst of its first answers arriving together."""
        expires_at = await self._remembering.run(
            token_hash, lambda: self._remember_token(caller, token_hash)
        )
        self._tokens_written[token_hash] = (time.monotonic(), expires_at)
        return expires_at

    async def _remember_token(self, caller: Caller, token_hash: str) -> float:
        """Record the token as valid; returns until when decisions made with it may be used."""
        horizon = time.time() + self._ttl
        if self._keystone is None:
            await self._decisions.remember_token(token_hash, horizon)
            return horizon
        token_expiry = await self._decisions.token_expiry(token_hash)
        if token_expiry is not None:
            return min(horizon, token_expiry)
        info = await self._keystone.validate(caller.headers[AUTH_TOKEN])
        if info is None:  # Keystone could not say (down?): rely on Glance's answer alone
            await self._decisions.remember_token(token_hash, horizon)
            return horizon
        await self._decisions.remember_token(
            token_hash, min(horizon, info.expires_at), info.project_id, "admin" in info.roles
        )
        return min(horizon, info.expires_at)

    async def known(self, caller: Caller) -> bool:
        return caller.token_hash is not None and await self._decisions.token_known(
            caller.token_hash
        )

    async def offline_decision(self, caller: Caller, image_id: str) -> int:
        """What Glance answered (or would answer) this caller about this image: 200/401/403/404.

        Only a caller Glance accepted before gets anything; it keeps exactly what Glance gave it,
        plus images anyone with a valid token may see (public, community).
        """
        if not await self.known(caller):
            return 401
        assert caller.token_hash is not None
        remembered = await self._decisions.lookup(caller.token_hash, image_id)
        if remembered is not None:
            return remembered
        record = await self._documents.get(SHARED_SCOPE, f"/v2/images/{image_id}")
        if record is not None and open_to_all(record.body):
            return 200
        return 404


def open_to_all(record_body: bytes) -> bool:
    """Whether a remembered image record says any valid token may see the image."""
    try:
        record = json.loads(record_body)
    except ValueError:
        return False
    return record.get("visibility") in _OPEN_VISIBILITIES and record.get("status") == "active"
