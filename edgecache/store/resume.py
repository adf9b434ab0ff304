"""The first step of a fill that resumes a kept partial (edgecache.store.partials): its bytes are
read back from disk and hashed again, chunk digests and Glance's digests alike, as if they had
just been received. Neither a hasher's state nor the digests of the chunks can be carried
portably over a restart, and reading the bytes again costs local disk and CPU, not WAN.

Readers of the fill may send those bytes as soon as they are hashed, as they would received
ones; like them, the image's last byte is withheld until the whole image is verified, so a
kept partial that is not what Glance sent (a torn tail after a power cut) fails the fill.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections import deque
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from edgecache.store.fillmemory import FillMemory

if TYPE_CHECKING:
    from edgecache.store.fill import Fill

READ_BACK = 4 * 2**20  # bytes read at a time (as fill.BATCH_SIZE: few thread hand-overs)
IN_LANES = 2  # batches being hashed while the next is read (as fill.LANE_DEPTH)


async def read_back(fill: Fill, length: int, memory: FillMemory, executor: Executor) -> None:
    """Hash the first `length` bytes of the fill's partial file into the fill; they count as
    written when hashed. Ends early, at a shorter beginning, if the file is shorter."""
    loop = asyncio.get_running_loop()
    size = min(READ_BACK, memory.limit)
    in_lanes: deque[asyncio.Future[list[None]]] = deque()
    offset = 0
    try:
        while offset < length:
            wanted = min(size, length - offset)
            await memory.take(wanted)
            try:
                piece = await loop.run_in_executor(executor, os.pread, fill.fd, wanted, offset)
            except BaseException:
                memory.give_back(wanted)
                raise
            memory.give_back(wanted - len(piece))
            if not piece:
                break
            hashed = fill.rehash(piece)
            hashed.add_done_callback(functools.partial(_give_back, memory, len(piece)))
            in_lanes.append(hashed)
            offset += len(piece)
            while len(in_lanes) > IN_LANES:
                await in_lanes.popleft()
    finally:  # each batch's memory goes back once its hashing ends, however it ends
        outcomes = await asyncio.gather(*in_lanes, return_exceptions=True)
    for outcome in outcomes:  # a failure in the lanes is the fill's
        if isinstance(outcome, BaseException):
            raise outcome


def _give_back(memory: FillMemory, size: int, _: asyncio.Future[list[None]]) -> None:
    memory.give_back(size)
