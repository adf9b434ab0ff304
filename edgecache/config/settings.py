"""Settings: every setting the daemon has, one field each, declared section by section in
edgecache/config/sections/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecache.config.sections.auth import AuthSettings
from edgecache.config.sections.cache import CacheSettings
from edgecache.config.sections.keystone import KeystoneSettings
from edgecache.config.sections.offline import OfflineSettings
from edgecache.config.sections.prefetch import PrefetchSettings
from edgecache.config.sections.server import ServerSettings
from edgecache.config.sections.upstream import UpstreamSettings
from edgecache.config.sections.zone import ZoneSettings


@dataclass(frozen=True, kw_only=True)
class Settings(
    UpstreamSettings,
    ServerSettings,
    OfflineSettings,
    AuthSettings,
    KeystoneSettings,
    CacheSettings,
    ZoneSettings,
    PrefetchSettings,
):
    """Everything the daemon is configured with; config/edgecache.toml documents each key."""

    @property
    def admin_socket(self) -> Path:
        return self.admin_socket_path or Path(self.cache_dir) / "admin.sock"
