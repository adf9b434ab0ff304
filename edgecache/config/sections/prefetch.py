"""[prefetch]: when the prefetch jobs (glance cache-queue, edgecache warm --queue) may take
the uplink."""

from __future__ import annotations

from dataclasses import dataclass

from edgecache.config.declaration import Section
from edgecache.config.kinds import DailyWindow, OrUnset

PREFETCH = Section(
    "prefetch",
    intro="Queued images (glance cache-queue, edgecache warm --queue) are kept in the index and "
    "survive restarts. Jobs from before a restart are fetched as the [keystone] service user, or "
    'without it wait until someone queues them again (docs/operations.md, "Prefetch jobs").',
)


@dataclass(frozen=True, kw_only=True)
class PrefetchSettings:
    prefetch_window: tuple[int, int] | None = PREFETCH.setting(
        OrUnset(DailyWindow()), None, key="window", suggest=(22 * 60, 6 * 60)
    )
    """The daily span of local time in which queued images start, such as "22:00-06:00"
    (across midnight when the end is before the start); one under way when it ends goes on.
    Only queued images wait for it: a client's request (a boot) is served at once whatever the
    time. Unset: they start at any time."""
