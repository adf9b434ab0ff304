"""[auth]: how long Glance's answers are reused online, and what its download rule is taken to
be while the uplink is down."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.config.declaration import Section
from edgecache.config.kinds import Roles, Seconds

AUTH = Section("auth")


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    reuse_decisions_for: float = AUTH.setting(Seconds(zero_allowed=True), 0.0)
    """Online, every request for an image's data first asks Glance, with the caller's token and
    at the same moment, for the image's record (may it see it: Glance's get_image) and for its
    first byte (may it download it: Glance's download_image, with every download rule of
    Glance's policy). Bytes leave edgecache only if both say yes. A positive answer may be reused
    for this many seconds for the same identity and image (a boot reads the record, then the
    data), saving a round trip over the WAN per request; access revoked in Glance then takes up
    to this long to apply here. 0: ask Glance every time."""

    offline_download_roles: tuple[str, ...] = AUTH.setting(Roles(), ("member", "admin"))
    """While the uplink is down, an identity Glance accepted before (and Keystone still
    validates) may download a cached public or community image it never asked about only if its
    roles include one of these: Glance's default download_image rule. With your own download
    rules in Glance's policy, set [] so that offline downloads follow only what Glance
    answered."""
