"""Single-range `Range: bytes=...` parsing with Glance's semantics.

A header we cannot honour as one range (garbage, another unit, several ranges) is ignored and
the whole image is sent, as RFC 9110 allows; a well-formed range outside the image is
unsatisfiable (416).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SINGLE_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_MAX_DIGITS = 19  # beyond 2**63 nothing can be satisfiable; refuse to build huge ints


class RangeNotSatisfiable(Exception):
    """The requested range lies outside the image."""


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
    """The range to send, or None for the whole body; raises RangeNotSatisfiable."""
    if not header:
        return None
    match = _SINGLE_RANGE.match(header)
    if not match:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        raise RangeNotSatisfiable(header)
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(size - suffix, 0), size)
    start = int(first)
    end = size if not last else int(last) + 1
    if last and end <= start:
        raise RangeNotSatisfiable(header)
    if start >= size:
        raise RangeNotSatisfiable(header)
    return ByteRange(start, min(end, size))
