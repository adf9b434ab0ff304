"""`Range: bytes=...` parsing with Glance's semantics (glance.common.wsgi).

Glance answers one range only: several ranges are a 400, a header it cannot parse or a start
beyond the image is a 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE | re.ASCII)
_MAX_DIGITS = 19  # beyond 2**63 nothing can be satisfiable; refuse to build huge ints


class RangeNotSatisfiable(Exception):
    """The header is not a range Glance would serve (416); says why in Glance's words."""

    def __init__(self, reason: str = "Invalid Range header.") -> None:
        super().__init__(reason)
        self.reason = reason


class MultipleRanges(Exception):
    """Glance refuses multi-range requests with a 400."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, total: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{total}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send, or None for the whole body.

    Raises MultipleRanges or RangeNotSatisfiable as Glance would answer them.
    """
    if header is None:
        return None
    if "," in header:
        raise MultipleRanges(header)
    match = _SINGLE_RANGE.match(header)
    if not match or not any(match.groups()):
        raise RangeNotSatisfiable()
    first, last = match.groups()
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        raise RangeNotSatisfiable()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    if last and int(last) < start:
        raise RangeNotSatisfiable()
    if start >= size:
        raise RangeNotSatisfiable(
            "Invalid start position in Range header. Start position MUST be in the "
            f"inclusive range [0, {size - 1}]."
        )
    return ByteRange(start, min(int(last) + 1, size) if last else size)
