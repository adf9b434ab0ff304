"""[cache]: where the copies live, how much room they get, and how they are verified."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgecache.config.declaration import Computed, Section
from edgecache.config.kinds import Boolean, Count, Location, Seconds, Size

CACHE = Section("cache")
KiB, MiB, GiB = 2**10, 2**20, 2**30


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecache"


@dataclass(frozen=True, kw_only=True)
class CacheSettings:
    cache_dir: Path = CACHE.setting(
        Location(),
        Computed(default_cache_dir),
        key="dir",
        example=Path("/var/cache/edgecache"),
        flag="where cached images and the index live",
    )
    """Where the index (index.sqlite) and image copies live. Default: $XDG_CACHE_HOME/edgecache."""

    max_size: int = CACHE.setting(
        Size(), 20 * GiB, example=200 * GiB, flag="cache capacity, e.g. 500MiB, 20GiB, 1.5TB"
    )
    """Capacity; least recently used images are evicted to stay under it. 500MiB, 20GiB,
    1.5TB..."""

    index_max_size: int = CACHE.setting(Size(at_least=MiB), 256 * MiB)
    """The cache index (index.sqlite: the copies' rows, remembered Glance documents and
    decisions) is held under this size: every minute, answers nobody had from Glance for
    decision_ttl are dropped, and past this bound the least recently used ones too (never the
    version documents and schemas). docs/operations.md says what it holds for N identities and M
    images."""

    chunk_size: int = CACHE.setting(Size(at_least=64 * KiB, at_most=256 * MiB), 4 * MiB)
    """Images are hashed (xxh3) in chunks of this size when filled."""

    fill_memory: int = CACHE.setting(Size(at_least=MiB), 48 * MiB)
    """Memory all fills together may hold: bytes received from Glance and not yet written and
    hashed. One fill holds at most 12MiB of it; when many run at once (`edgecache warm
    --parallel 8`) and the budget is spent, a fill stops reading from Glance until room frees up
    (TCP then slows Glance down). Gauges: edgecache_fill_memory_bytes and
    edgecache_fill_memory_limit_bytes."""

    verify_reads: bool = CACHE.setting(Boolean(), True)
    """Re-hash each chunk as it is served from disk, so a flipped bit is caught (the copy is
    quarantined and fetched again) instead of being sent. Costs a read of the chunk per hit."""

    verify_md5: bool = CACHE.setting(Boolean(), False)
    """Also check Glance's legacy md5 `checksum` when its os_hash_value (sha512 by default) is
    there to check. md5 adds no safety on top of sha512 but about 40% to a fill's CPU, so by
    default it is checked only when it is the only checksum Glance published (the rule
    glanceclient follows too)."""

    reverify_after: float = CACHE.setting(Seconds(zero_allowed=True), 60.0)
    """A chunk re-hashed (or filled) less than this many seconds ago is not re-hashed for the
    next reader of the same file: a burst of boots from one image hashes it once. (Bits that flip
    on disk show only when pages are read from disk again; 0 re-hashes on every read.)"""

    quarantine_keep: float = CACHE.setting(Seconds(zero_allowed=True), 24 * 3600.0)
    """A copy whose hashes stopped matching is moved to <dir>/quarantine/ (and fetched again)
    rather than deleted, for an operator to inspect. Quarantined copies count toward max_size and
    are the first removed when room is needed; a pass every minute removes those quarantined
    more than this many seconds ago (0: at the next pass). `glance cache-clean` and `edgecache
    cache clean` remove them all. Gauges: edgecache_quarantine_files and
    edgecache_quarantine_bytes."""

    prefetch_parallel: int = CACHE.setting(Count(), 2)
    """How many queued images (glance cache-queue, edgecache warm) are fetched at the same
    time."""

    # --- issue 22: partial fills survive a restart (branch resume-fills) --------------------
    keep_partials: float = CACHE.setting(Seconds(zero_allowed=True), 24 * 3600.0)
    """A fill still running when the daemon stops (shutdown, kill -9, a power cut) leaves its
    partial file, and a fill of the same image within this many seconds resumes it: the kept
    bytes are read back and hashed again, the rest is asked for with Range, and the whole image
    is verified against Glance's checksums as in any fill. A partial whose image changed at the
    region, that is damaged, or older than this is discarded (0: none is kept). Kept partials
    count toward max_size and are removed after quarantined copies and before any stored copy
    when room is needed. `edgecache status` lists them; gauges edgecache_kept_partials and
    edgecache_kept_partial_bytes."""
    # --- end of issue 22 ---------------------------------------------------------------------
