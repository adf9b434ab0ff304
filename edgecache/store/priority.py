"""In which class of the uplink budget (edgecache.upstream.budget) a fill takes the region's
bytes: as a boot while a caller waits for them, else as a prefetch.

A fill started for a caller is a boot for as long as a caller reads from it. A fill no caller
reads (one the prefetcher started for warm or cache-queue, a fill started behind a Range
request passed through to Glance, one whose callers all went away) is a prefetch; a caller
that joins it makes it a boot from its next piece on, and even while that piece waits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from edgecache.upstream.budget import BOOT, PREFETCH, Kind, UplinkBudget


class FillPriority:
    def __init__(self, budget: UplinkBudget) -> None:
        self._budget = budget
        self._callers: Counter[str] = Counter()

    @contextmanager
    def caller_waits(self, image_id: str) -> Iterator[None]:
        """A caller waits for the bytes of `image_id` while the block runs."""
        self._callers[image_id] += 1
        try:
            yield
        finally:
            self._callers[image_id] -= 1
            if not self._callers[image_id]:
                del self._callers[image_id]

    def kind_of(self, image_id: str) -> Kind:
        return BOOT if self._callers[image_id] else PREFETCH

    async def take(self, image_id: str, size: int) -> None:
        """Take `size` bytes a fill of `image_id` read from the region out of the budget."""
        await self._budget.take(size, lambda: self.kind_of(image_id))
