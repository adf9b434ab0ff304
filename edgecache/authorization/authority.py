"""Authorization: Glance decides; edgecache remembers its decisions for when the uplink is down.

Glance makes two decisions about a caller and an image, and edgecache keeps them apart:
`image` (may the caller see the record: Glance's `get_image`) and `download` (may it have
the bytes: Glance's `download_image`, which by default needs the `member` role, refuses
deactivated images, and carries whatever download rules the operator wrote).

Decisions belong to an identity. With a Keystone to validate tokens (`[keystone]`), the identity
is who the token stands for as Glance's policy sees it: user, scope (project, domain or system)
and roles; a renewed token of the same identity gets the same remembered answers, a token with
another role set is another identity. Without Keystone, the identity is the token itself.
Identities and tokens are known only by keyed hashes (HMAC under a per-installation secret),
so neither the index nor the logs ever hold a token, and a copied index cannot be matched
against tokens without the secret file. A remembered decision is used for a token only while
that token is good (Keystone's expiry, capped by `decision_ttl`; without Keystone, at most
`token_lifetime` after Glance first accepted it here).

While the uplink is down a caller that cannot be placed gets 503, not 401: a token never seen
here (and no Keystone that can validate it now) may well be valid, and a 401 would tell the
clients to throw it away. 401 is kept for no token, and for tokens Glance or Keystone said are
invalid or that are known to have expired.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from edgecache.authorization.decisions import DecisionStore, TokenRow
from edgecache.authorization.identity import Caller, Identity, TokenHasher, token_identity
from edgecache.authorization.keystone import Keystone, TokenRejected
from edgecache.documents import SHARED_SCOPE, Document, DocumentStore
from edgecache.headers import AUTH_TOKEN, on_behalf_of
from edgecache.lru import LruDict
from edgecache.singleflight import SingleFlight

RECENT_CAPACITY = 100_000
# An unchanged answer is written again at most this often (it pushes the expiry forward).
REWRITE_AFTER = 60.0
# Glance's answers that are decisions about a caller and an image (not failures).
DECISION_STATUSES = frozenset({200, 403, 404})
_OPEN_VISIBILITIES = frozenset({"public", "community"})

SEE = "image"  # Glance's get_image: the record
DOWNLOAD = "download"  # Glance's download_image: the bytes

# What edgecache answers for a caller it cannot place while Glance cannot be asked.
INVALID_TOKEN = 401  # no token, or one Keystone or Glance said is invalid or expired
UNVALIDATED_TOKEN = 503  # never seen here, and no Keystone that can say now


@dataclass(frozen=True)
class _KnownToken:
    identity: Identity
    expires_at: float  # wall clock: until when the token may be relied on
    written_at: float  # monotonic: when the rows were last written
    validated: bool = True  # Keystone said so; else Glance's acceptance alone


class Authority:
    def __init__(
        self,
        *,
        decisions: DecisionStore,
        documents: DocumentStore,
        hasher: TokenHasher,
        ttl: float,
        token_lifetime: float,
        keystone: Keystone | None = None,
        offline_download_roles: tuple[str, ...] = (),
        open_record_max_age: float | None = None,
    ) -> None:
        """`open_record_max_age`: how old a remembered record of a public or community image
        may be for identities that never asked about it to get it offline (None: never; only
        where records are kept fresh in the background)."""
        self._decisions = decisions
        self._documents = documents
        self._hasher = hasher
        self._ttl = ttl
        self._token_lifetime = token_lifetime
        self._keystone = keystone
        self._offline_download_roles = frozenset(offline_download_roles)
        self._open_record_max_age = open_record_max_age
        # What was written lately, so repeated identical answers cost no database write.
        self._tokens: LruDict[str, _KnownToken] = LruDict(RECENT_CAPACITY)
        self._identifying: SingleFlight[str, _KnownToken | int] = SingleFlight()
        # (identity, image, action) -> (status, decided at, written at), monotonic.
        self._decided: LruDict[tuple[str, str, str], tuple[int, float, float]] = LruDict(
            RECENT_CAPACITY
        )
        # Tokens Glance or Keystone said are not valid (in memory only, bounded: anyone can
        # send one, and nothing an unauthenticated caller sends creates a row).
        self._rejected: LruDict[str, None] = LruDict(RECENT_CAPACITY)

    def caller(self, headers: Mapping[str, str]) -> Caller:
        forwarded = on_behalf_of(headers)
        token = forwarded.get(AUTH_TOKEN)
        return Caller(forwarded, self._hasher.hash(token) if token else None)

    async def observe(
        self,
        caller: Caller,
        status: int,
        image_ids: list[str],
        action: str = SEE,
        decisions: frozenset[int] = DECISION_STATUSES,
    ) -> Identity | None:
        """Learn from Glance's answer to `caller` about `image_ids` (may be empty): an answer
        to a request Glance authenticates (not its version documents), so anything but 401 or
        a 5xx says Glance accepted the token. `decisions` are the statuses that are Glance's
        decision on `action` for this caller (a 403 to a member list is not: it says the image
        is not shared). Returns who the caller is, if Glance accepted it."""
        if caller.token_hash is None:
            return None
        if status == 401:
            await self._forget_token(caller.token_hash)
            return None
        if status >= 500:
            return None
        self._rejected.pop(caller.token_hash, None)
        known = await self._accepted(caller, caller.token_hash)
        if known is None:
            return None
        if not image_ids or status not in decisions:
            return known.identity
        key, now, stale = known.identity.key, time.monotonic(), []
        for image_id in image_ids:
            remembered = self._decided.get((key, image_id, action))
            if (
                remembered is not None
                and remembered[0] == status
                and now - remembered[2] < REWRITE_AFTER
            ):
                self._decided[(key, image_id, action)] = (status, now, remembered[2])
            else:
                stale.append(image_id)
                self._decided[(key, image_id, action)] = (status, now, now)
        if stale:
            await self._decisions.remember(key, action, stale, status, time.time() + self._ttl)
        return known.identity

    def forget_recent(self) -> None:
        """Rows were deleted behind our back (revalidation): write the next answers again."""
        self._tokens.clear()
        self._decided.clear()

    async def forget_image(self, image_id: str) -> None:
        """The image is gone: no identity keeps a remembered answer about it."""
        await self._decisions.forget_image(image_id)
        for key in [key for key in self._decided if key[1] == image_id]:
            del self._decided[key]

    def recent_identity(self, caller: Caller) -> Identity | None:
        """Who Glance lately accepted this caller's token as, if it did."""
        known = self._tokens.get(caller.token_hash) if caller.token_hash else None
        return known.identity if known is not None and known.expires_at > time.time() else None

    def just_decided(
        self, caller: Caller, image_id: str, within: float, action: str = SEE
    ) -> int | None:
        """Glance's answer to this caller about this image, if it gave it `within` seconds."""
        known = self._tokens.get(caller.token_hash) if caller.token_hash else None
        if known is None or known.expires_at <= time.time():
            return None
        decided = self._decided.get((known.identity.key, image_id, action))
        return decided[0] if decided and time.monotonic() - decided[1] < within else None

    async def offline_identity(self, caller: Caller) -> Identity | int:
        """The identity Glance accepted before that this caller's token stands for; else
        INVALID_TOKEN (no token, or one known to be invalid or expired) or UNVALIDATED_TOKEN
        (a token, or an identity, that cannot be placed without the region).

        A token never seen here is validated with Keystone (reachable at the edge site), so a
        renewed token of a known identity keeps its access while Glance cannot be asked.
        """
        if caller.token_hash is None or caller.token_hash in self._rejected:
            return INVALID_TOKEN
        known = self._tokens.get(caller.token_hash)
        if known is None or known.expires_at <= time.time():
            identified = await self._identify(caller, caller.token_hash)
            if isinstance(identified, int):
                return identified
            if identified.expires_at <= time.time():
                return INVALID_TOKEN
            known = identified
        who = await self._decisions.identity(known.identity.key)
        return who if who is not None else UNVALIDATED_TOKEN

    async def accepted_roles(self, caller: Caller) -> frozenset[str]:
        """Glance accepted this caller's token just now: the roles Keystone says it carries.

        None without `[keystone]`, or for a token Keystone cannot vouch for now: roles are
        never taken from what the caller sends.
        """
        if caller.token_hash is None:
            return frozenset()
        known = await self._accepted(caller, caller.token_hash)
        return known.identity.roles if known is not None and known.validated else frozenset()

    async def offline_decision(self, caller: Caller, image_id: str, action: str = SEE) -> int:
        """What Glance answered (or would answer) this caller about this image: 200/401/403/
        404, or 503 where it cannot be known here (a token that cannot be validated now, or
        Glance's decision for this identity).

        Only an identity Glance accepted before gets anything; it keeps exactly what Glance gave
        it, plus the records of images anyone may see (public, community) while they are fresh
        (`open_record_max_age`), and their bytes when its roles include one of
        `[auth] offline_download_roles` (Glance's default rule).
        """
        who = await self.offline_identity(caller)
        if isinstance(who, int):
            return who
        remembered = await self._decisions.lookup(who.key, image_id, action)
        if remembered is not None:
            return remembered
        record = await self._documents.get(SHARED_SCOPE, f"/v2/images/{image_id}")
        open_image = record is not None and open_to_all(record.body)
        fresh_open = open_image and self._fresh(record)
        if action == SEE:
            return 200 if fresh_open else 503 if open_image else 404
        if fresh_open and who.roles & self._offline_download_roles:
            return 200
        if await self._decisions.lookup(who.key, image_id, SEE) == 200 or open_image:
            return 503  # it may see the image; whether it may download it is not known here
        return 404

    def _fresh(self, record: Document | None) -> bool:
        """Whether a remembered record is young enough to open its image to identities that
        never asked about it."""
        limit = self._open_record_max_age
        return record is not None and limit is not None and record.age <= limit

    async def _accepted(self, caller: Caller, token_hash: str) -> _KnownToken | None:
        """Glance accepted the token: remember who it stands for (at most once a minute).
        None if Keystone says the token is invalid or expired: its word wins."""
        known = self._tokens.get(token_hash)
        now = time.monotonic()
        if known is not None and now - known.written_at < REWRITE_AFTER:
            return known
        identified = await self._identify(caller, token_hash)
        if identified == INVALID_TOKEN and self._keystone is not None:
            return None
        if isinstance(identified, int) or not identified.validated:
            # No Keystone, or it cannot say now: Glance's acceptance alone, for at most the
            # token lifetime after Glance first accepted it here (it was issued before that).
            who = token_identity(token_hash)
            expires_at = (
                identified.expires_at  # a row that is still good: its first acceptance counts
                if isinstance(identified, _KnownToken)
                else time.time() + self._token_lifetime
            )
            identified = _KnownToken(who, expires_at, now, validated=False)
            await self._decisions.remember_token(token_hash, who.key, expires_at, validated=False)
        await self._decisions.accept(identified.identity, time.time() + self._ttl)
        known = _KnownToken(identified.identity, identified.expires_at, now, identified.validated)
        self._tokens[token_hash] = known
        return known

    async def _identify(self, caller: Caller, token_hash: str) -> _KnownToken | int:
        """Who the token stands for: remembered, else asked of Keystone (once for a burst)."""
        return await self._identifying.run(token_hash, lambda: self._lookup(caller, token_hash))

    async def _lookup(self, caller: Caller, token_hash: str) -> _KnownToken | int:
        """The token's identity; INVALID_TOKEN if it is known to be invalid or expired,
        UNVALIDATED_TOKEN if nothing here can say."""
        row = await self._decisions.token(token_hash)
        if row is not None and (row.validated or self._keystone is None):
            known = await self._from_row(row)
            if known is not None:
                return known
        if self._keystone is None:
            return UNVALIDATED_TOKEN
        info = await self._keystone.validate(caller.headers[AUTH_TOKEN])
        if isinstance(info, TokenRejected):
            self._rejected[token_hash] = None
            return INVALID_TOKEN
        if info is None:
            # Keystone cannot say now: what Glance's acceptance alone taught, if anything.
            known = await self._from_row(row) if row is not None else None
            return UNVALIDATED_TOKEN if known is None else known
        who = self._hasher.identity(info)
        expires_at = min(time.time() + self._ttl, info.expires_at)
        await self._decisions.remember_token(token_hash, who.key, expires_at, validated=True)
        if expires_at <= time.time():
            return INVALID_TOKEN  # remembered as known to have expired
        return _KnownToken(who, expires_at, time.monotonic())

    async def _from_row(self, row: TokenRow) -> _KnownToken | int | None:
        """The token as its row knows it; None where Keystone vouched for it but the identity
        (its project and roles) is not remembered: only Keystone can say them again."""
        if row.expires_at <= time.time():
            return INVALID_TOKEN
        who = await self._decisions.identity(row.identity)
        if who is None and row.validated:
            return None
        return _KnownToken(
            who or Identity(row.identity), row.expires_at, time.monotonic(), row.validated
        )

    async def _forget_token(self, token_hash: str) -> None:
        """Glance refused this token (401): nothing it was allowed before stands for it."""
        self._tokens.pop(token_hash, None)
        self._rejected[token_hash] = None
        await self._decisions.forget_token(token_hash)
        await self._decisions.forget_identity(token_identity(token_hash).key)


def open_to_all(record_body: bytes) -> bool:
    """Whether a remembered image record says any valid token may see the image."""
    try:
        record = json.loads(record_body)
    except ValueError:
        return False
    return record.get("visibility") in _OPEN_VISIBILITIES and record.get("status") == "active"
