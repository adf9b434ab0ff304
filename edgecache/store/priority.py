"""In which class of the uplink budget (edgecache.upstream.budget) a fill takes the region's
bytes: as a boot while a caller waits for them, else as a prefetch.

A fill started for a caller is a boot for as long as a caller reads from it. A fill no caller
reads (one the prefetcher started for warm or cache-queue, a fill started behind a Range
request passed through to Glance, one whose callers all went away) is a prefetch; a caller
that joins it makes it a boot from its next piece on, and even while that piece waits.

A stream from the region that starts as a prefetch's, under a budget, also gets its connection
set up for a prefetch (edgecache.upstream.bulk), and that connection is closed after it rather
than given back to the pool, so other requests get connections as they are made.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp

from edgecache.upstream.budget import BOOT, PREFETCH, Kind, UplinkBudget
from edgecache.upstream.bulk import bound_for_prefetch

# The receive window of a prefetch's connection, in seconds of max_rate: enough for one
# connection to carry about max_rate on its own across round trips up to 100 ms, and what each
# of the warm's connections may still take from a boot that starts (0.05 made a 64 MiB boot
# early in a warm 1.15x instead of 1.37x, and halves what one connection carries).
PREFETCH_WINDOW = 0.1
MIN_PREFETCH_WINDOW = 64 * 2**10


class FillPriority:
    def __init__(self, budget: UplinkBudget) -> None:
        self.budget = budget
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

    def stream(self, image_id: str) -> RegionStream:
        return RegionStream(self, image_id)


class RegionStream:
    """One stream of a fill's bytes from the region."""

    def __init__(self, priority: FillPriority, image_id: str) -> None:
        self._priority = priority
        self._image_id = image_id

    async def take(self, size: int) -> None:
        """Take `size` bytes the fill read out of the budget, in the fill's class."""
        await self._priority.budget.take(size, lambda: self._priority.kind_of(self._image_id))

    def carried_by(self, response: aiohttp.ClientResponse) -> None:
        """The stream starts with `response`: a prefetch's connection is set up for it."""
        rate = self._priority.budget.rate
        connection = response.connection
        if rate is None or self._priority.kind_of(self._image_id) == BOOT:
            return
        if connection is None or connection.transport is None or connection.protocol is None:
            return  # the whole answer is in already: nothing more to bound
        connection.protocol.force_close()  # closed when released, not pooled
        window = max(int(rate * PREFETCH_WINDOW), MIN_PREFETCH_WINDOW)
        bound_for_prefetch(connection.transport.get_extra_info("socket"), window)
