"""[offline]: what edgecache remembers of Glance's answers, for how long, and what it goes by
while the uplink is down."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.config.declaration import Section
from edgecache.config.kinds import Seconds

OFFLINE = Section(
    "offline",
    intro="Glance's answers, remembered: how long they serve while the uplink is down "
    "(decision_ttl) and how long one may stand in for asking Glance again while it is up "
    "(reuse_decisions_for), and what tokens and image records are taken for offline.",
)


@dataclass(frozen=True, kw_only=True)
class OfflineSettings:
    decision_ttl: float = OFFLINE.setting(Seconds(), 12 * 3600.0)
    """Seconds an authorization Glance gave (identity -> image: may see it, may download it;
    allowed or refused) is remembered for use while the uplink is down. With [keystone], an
    identity is a user in a project with a set of roles, so a renewed token of the same user
    keeps its access; without it, each token is its own identity. Identities and tokens are
    known only by keyed hashes; a decision is never used past the expiry of the token showing
    it."""

    reuse_decisions_for: float = OFFLINE.setting(
        Seconds(zero_allowed=True), 0.0, formerly="auth.reuse_decisions_for"
    )
    """Online, every request for an image's data first asks Glance, with the caller's token and
    at the same moment, for the image's record (may it see it: Glance's get_image) and for its
    first byte (may it download it: Glance's download_image, with every download rule of
    Glance's policy). Bytes leave edgecache only if both say yes. A positive answer may be reused
    for this many seconds for the same identity and image (a boot reads the record, then the
    data), saving a round trip over the WAN per request; access revoked in Glance then takes up
    to this long to apply here. 0: ask Glance every time."""

    token_lifetime: float = OFFLINE.setting(Seconds(), 3600.0)
    """Without [keystone], edgecache cannot ask when a token expires: a token Glance accepted is
    used offline for at most this many seconds after Glance first accepted it here (Keystone's
    default token lifetime, [token] expiration = 3600). Set it to your Keystone's expiration.
    Offline, a token never seen here gets 503 (it cannot be validated now), not 401."""

    record_max_age: float = OFFLINE.setting(Seconds(), 900.0)
    """With [keystone] service credentials, the records of cached images are re-read from Glance
    in the background while the uplink is up, so none is older than this many seconds: an image
    deleted, deactivated, made private or changed at the region stops being served offline to
    callers Glance would now refuse within this bound. Offline, a known identity that never
    asked about a cached public or community image gets it only if its record is younger than
    this. Without service credentials that fallback is off (such callers get 503)."""
