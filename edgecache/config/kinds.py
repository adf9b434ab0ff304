"""The kinds of value a setting holds. A kind checks a raw value (from the TOML file or a flag)
and turns it into what Settings holds, or raises a ConfigError naming the key; it also writes a
value back as TOML for the example file, and says how argparse reads the value of a flag."""

from __future__ import annotations

import argparse
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from edgecache.config.errors import ConfigError
from edgecache.config.sizes import parse_size, size_text

T_co = TypeVar("T_co", covariant=True)


def toml_literal(value: object) -> str:
    """A default or example value written as TOML."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, tuple | list):
        return f"[{', '.join(toml_literal(item) for item in value)}]"
    if value is None:  # TOML has no null: "" leaves an optional setting unset
        return '""'
    return json.dumps(str(value))


class Kind(ABC, Generic[T_co]):
    """What one setting holds, and how it is read and written."""

    metavar = "VALUE"

    @abstractmethod
    def parse(self, value: object, key: str) -> T_co:
        """`value` as Settings holds it, or a ConfigError naming `key`."""

    def toml(self, value: object) -> str:
        return toml_literal(value)

    def note(self) -> str:
        """What the example file says beyond the setting's help (its bounds), if anything."""
        return ""

    def flag_options(self) -> dict[str, Any]:
        """Keyword arguments for argparse's add_argument, for a setting with a `serve` flag."""
        return {"metavar": self.metavar}


class OrUnset(Kind[T_co | None]):
    """Another kind, or "" for unset (TOML has no null)."""

    def __init__(self, kind: Kind[T_co]) -> None:
        self._kind = kind
        self.metavar = kind.metavar

    def parse(self, value: object, key: str) -> T_co | None:
        return None if value == "" else self._kind.parse(value, key)

    def toml(self, value: object) -> str:
        return toml_literal(None) if value is None else self._kind.toml(value)

    def note(self) -> str:
        return self._kind.note()

    def flag_options(self) -> dict[str, Any]:
        return self._kind.flag_options()


class Url(Kind[str]):
    """An http(s) URL; a node's URL loses its trailing slash, to be compared with others."""

    metavar = "URL"

    def __init__(self, *, node: bool = False) -> None:
        self._node = node

    def parse(self, value: object, key: str) -> str:
        try:
            parts = urlsplit(str(value))
            valid = parts.scheme in ("http", "https") and bool(parts.netloc)
        except ValueError:  # e.g. an unclosed [IPv6 address
            valid = False
        if not valid:
            raise ConfigError(key, f"expected an http(s) URL, got {value!r}")
        return str(value).rstrip("/") if self._node else str(value)


class UrlList(Kind[tuple[str, ...]]):
    """http(s) URLs in order of preference: a TOML list, or comma-separated."""

    def parse(self, value: object, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [url for url in value.split(",") if url.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, "expected a list of http(s) URLs")
        return tuple(
            Url().parse(url.strip() if isinstance(url, str) else url, key) for url in value
        )


class NodeUrls(Kind[tuple[str, ...]]):
    """The URLs of a zone's nodes, as a TOML list."""

    def parse(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise ConfigError(key, 'expected a list of node URLs, such as ["http://node1:9292"]')
        return tuple(Url(node=True).parse(url, key) for url in value)


class Listen(Kind[tuple[str, int]]):
    """HOST:PORT to listen on; no host (`:9292`) is every address."""

    metavar = "HOST:PORT"

    def parse(self, value: object, key: str) -> tuple[str, int]:
        host, sep, port = str(value).rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
        return host.strip("[]") or "0.0.0.0", int(port)

    def toml(self, value: object) -> str:
        if not isinstance(value, tuple):
            return super().toml(value)
        host, port = value
        return toml_literal(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


class Location(Kind[Path]):
    """A path on this machine (`~` is expanded); nothing is checked."""

    metavar = "PATH"

    def parse(self, value: object, key: str) -> Path:
        return Path(str(value)).expanduser()


class Text(Kind[str]):
    def parse(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected a non-empty string")
        return value


class Secret(Kind[str]):
    """A shared secret, long enough not to be guessed; never repeated in a message."""

    def __init__(self, min_length: int) -> None:
        self.min_length = min_length

    def parse(self, value: object, key: str) -> str:
        if not isinstance(value, str) or len(value) < self.min_length:
            raise ConfigError(key, f"expected a string of at least {self.min_length} characters")
        return value

    def note(self) -> str:
        return f"At least {self.min_length} characters."


class Boolean(Kind[bool]):
    def parse(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value

    def flag_options(self) -> dict[str, Any]:
        return {"action": argparse.BooleanOptionalAction, "default": None}


class Choice(Kind[str]):
    def __init__(self, options: Sequence[str], *, ignore_case: bool = False) -> None:
        self.options = tuple(options)
        self._ignore_case = ignore_case

    def parse(self, value: object, key: str) -> str:
        text = str(value).lower() if self._ignore_case else value
        if not isinstance(text, str) or text not in self.options:
            raise ConfigError(key, f"expected one of {', '.join(self.options)}, got {value!r}")
        return text

    def flag_options(self) -> dict[str, Any]:
        return {"choices": self.options}


class Roles(Kind[tuple[str, ...]]):
    def parse(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
            raise ConfigError(key, 'expected a list of role names, such as ["member"]')
        return tuple(value)


class Count(Kind[int]):
    """A whole number >= 1."""

    def parse(self, value: object, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, f"expected a whole number >= 1, got {value!r}")
        return value


class Seconds(Kind[float]):
    """A number of seconds, > 0 or (where 0 means something) >= 0."""

    def __init__(self, *, zero_allowed: bool = False) -> None:
        self._zero_allowed = zero_allowed

    def parse(self, value: object, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or value < 0
            or (value == 0 and not self._zero_allowed)
        ):
            bound = ">= 0" if self._zero_allowed else "> 0"
            raise ConfigError(key, f"expected a number of seconds {bound}, got {value!r}")
        return float(value)


class Size(Kind[int]):
    """A size in bytes, written `500MiB`, `20GiB`, `1.5TB` or as a byte count."""

    metavar = "SIZE"

    def __init__(self, *, at_least: int = 0, at_most: int | None = None) -> None:
        self._at_least = at_least
        self._at_most = at_most

    def parse(self, value: object, key: str) -> int:
        size = parse_size(value, key)
        too_small = size < self._at_least
        if self._at_most is not None and (too_small or size > self._at_most):
            raise ConfigError(key, f"must be {self._bounds()}")
        if too_small:
            raise ConfigError(key, f"must be {self._bounds()}, got {value!r}")
        return size

    def toml(self, value: object) -> str:
        return toml_literal(size_text(value)) if isinstance(value, int) else super().toml(value)

    def note(self) -> str:
        if not (self._at_least or self._at_most):
            return ""
        bounds = self._bounds()
        return f"{bounds[0].upper()}{bounds[1:]}."

    def _bounds(self) -> str:
        if self._at_most is None:
            return f"at least {size_text(self._at_least)}"
        return f"between {size_text(self._at_least)} and {size_text(self._at_most)}"


class DailyWindow(Kind[tuple[int, int]]):
    """A span of local time each day, `"22:00-06:00"`, held as (start, end) minutes after
    midnight; it crosses midnight when the end is before the start."""

    metavar = "HH:MM-HH:MM"
    _PATTERN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")

    def parse(self, value: object, key: str) -> tuple[int, int]:
        match = self._PATTERN.match(value) if isinstance(value, str) else None
        if match is None:
            raise ConfigError(
                key, f'expected a span of local time such as "22:00-06:00", got {value!r}'
            )
        hours_start, minutes_start, hours_end, minutes_end = (int(part) for part in match.groups())
        start, end = hours_start * 60 + minutes_start, hours_end * 60 + minutes_end
        if hours_start > 23 or minutes_start > 59 or minutes_end > 59 or end > 24 * 60:
            raise ConfigError(key, f"{value!r} is not a time of day (00:00 to 24:00)")
        if start == end % (24 * 60):
            raise ConfigError(key, f"{value!r} starts where it ends; leave it unset for any time")
        return start, end

    def toml(self, value: object) -> str:
        if isinstance(value, tuple) and len(value) == 2:
            start, end = value
            return f'"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"'
        return toml_literal(value)
