"""[auth]: what Glance's download rule is taken to be while the uplink is down."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.config.declaration import Section
from edgecache.config.kinds import Roles

AUTH = Section("auth")


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    offline_download_roles: tuple[str, ...] = AUTH.setting(Roles(), ("member", "admin"))
    """While the uplink is down, an identity Glance accepted before (and Keystone still
    validates) may download a cached public or community image it never asked about only if its
    roles include one of these: Glance's default download_image rule. With your own download
    rules in Glance's policy, set [] so that offline downloads follow only what Glance
    answered."""
