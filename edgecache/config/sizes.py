"""Sizes as operators write them (`500MiB`, `20GiB`, `1.5TB`, a byte count) and as the example
file shows them."""

from __future__ import annotations

import re

from edgecache.config.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_BINARY_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: object, key: str = "size") -> int:
    """Parse `500MiB`, `20GiB`, `1.5TB` or a plain byte count into bytes."""
    if isinstance(text, bool):
        raise ConfigError(key, f"expected a size such as 20GiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(key, "must not be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise ConfigError(key, f"expected a size such as 500MiB, 20GiB or 1.5TB, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def size_text(size: int) -> str:
    """`size` in the largest binary unit that divides it (4MiB, 200GiB), else in bytes."""
    for unit, factor in _BINARY_UNITS:
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return str(size)
