"""Who is asking, known only by keyed hashes: a caller's token, and the identity behind it.

Tokens and identities are hashed with HMAC under a per-installation secret (`token-hash.key`,
mode 0600), so neither the index nor the logs ever hold a token, and a copied index cannot be
matched against tokens without the secret file.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from edgecache.authorization.keystone import TokenInfo

SECRET_BYTES = 32


@dataclass(frozen=True)
class Identity:
    """Who a caller is, as far as Glance's policy can tell them apart."""

    key: str  # a keyed hash of (user, project, scope, roles), or of the token without Keystone
    project_id: str | None = None
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


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

    def identity(self, info: TokenInfo) -> Identity:
        """The identity Keystone says a token stands for, keyed by what Glance's policy sees."""
        parts = [info.user_id or "", info.scope, *sorted(info.roles)]
        key = "ks:" + self.hash(json.dumps(parts))
        return Identity(key, info.project_id, info.roles)


def token_identity(token_hash: str) -> Identity:
    """Without Keystone a token is its own identity (roles unknown)."""
    return Identity("tk:" + token_hash)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the headers to forward on their behalf and their token's hash."""

    headers: dict[str, str]
    token_hash: str | None
