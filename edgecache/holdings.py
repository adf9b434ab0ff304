"""What one node holds: its stored copies, the fills under way and its prefetch jobs; and
taking images out of it.

Glance's cache API (edgecache.api.glance_cache) lists and removes with it, for this node and,
in a zone, through each sibling's zone listener (edgecache.zone.holdings_endpoint), which
sends a sibling exactly this: image ids, sizes, counts, times and states, nothing of who may
have the images.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from edgecache.prefetch.queue import NEEDS_CREDENTIALS, Prefetcher
from edgecache.store.cache import ImageCache

QUEUE = "queue"
CACHE = "cache"
CLEAR_TARGETS = ("", CACHE, QUEUE)  # Glance's x-image-cache-clear-target: "" is both


@dataclass(frozen=True)
class Copy:
    """A stored copy, with what Glance's cache API says of one."""

    image_id: str
    size: int
    hits: int
    last_accessed: float  # 0 if never read
    last_modified: float  # when it was stored


@dataclass(frozen=True)
class Holdings:
    copies: list[Copy]
    filling: list[str]  # images being filled, by a prefetch or a request
    jobs: dict[str, str]  # prefetch job's image -> its state (edgecache.prefetch.queue)

    @property
    def queued(self) -> list[str]:
        """What Glance's cache API lists as queued: the jobs, and fills under way."""
        return [*self.jobs, *(image_id for image_id in self.filling if image_id not in self.jobs)]

    def has(self, image_id: str) -> bool:
        """Whether the image is stored, being filled, or queued and able to start here."""
        return (
            any(copy.image_id == image_id for copy in self.copies)
            or image_id in self.filling
            or self.jobs.get(image_id, NEEDS_CREDENTIALS) != NEEDS_CREDENTIALS
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "copies": [asdict(copy) for copy in self.copies],
            "filling": self.filling,
            "jobs": self.jobs,
        }

    @classmethod
    def from_json(cls, body: Any) -> Holdings:
        """ValueError if `body` is not a node's holdings."""
        try:
            return cls(
                copies=[
                    Copy(
                        str(copy["image_id"]),
                        int(copy["size"]),
                        int(copy["hits"]),
                        float(copy["last_accessed"]),
                        float(copy["last_modified"]),
                    )
                    for copy in body["copies"]
                ],
                filling=[str(image_id) for image_id in body["filling"]],
                jobs={str(image_id): str(state) for image_id, state in body["jobs"].items()},
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a node's holdings: {exc}") from exc


async def holdings(cache: ImageCache, prefetcher: Prefetcher) -> Holdings:
    return Holdings(
        copies=[
            Copy(
                entry.image_id,
                entry.size,
                entry.hits,
                entry.last_access if entry.hits else 0,
                entry.created_at,
            )
            for entry in await cache.index.all()
        ],
        filling=cache.fills.running(),
        jobs={job.image_id: job.state for job in prefetcher.progress()},
    )


class Removal(enum.Enum):
    REMOVED = "removed"  # its copy or its job (or both)
    ABSENT = "absent"  # neither stored nor queued
    BUSY = "busy"  # its copy is being read, and stays: ask again later


async def remove(cache: ImageCache, prefetcher: Prefetcher, image_id: str) -> Removal:
    """Dequeue the image and remove its stored copy (a fill under way goes on)."""
    dequeued = await prefetcher.discard(image_id)
    if await cache.index.get(image_id) is not None:
        return Removal.REMOVED if await cache.evictor.remove(image_id) else Removal.BUSY
    return Removal.REMOVED if dequeued else Removal.ABSENT


async def clear(cache: ImageCache, prefetcher: Prefetcher, target: str) -> None:
    """Glance's cache-clear: the queue, the stored copies ("cache"), or both (""); copies
    being read stay."""
    if target in ("", QUEUE):
        await prefetcher.clear()
    if target in ("", CACHE):
        for entry in await cache.index.all():
            await cache.evictor.remove(entry.image_id)
