"""How a setting is declared: once, as a field of Settings made by a Section, followed by its
help as the attribute's docstring. The declaration holds everything the loader, the `serve`
flags and the example file need to know of the setting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from edgecache.config.kinds import Kind, OrUnset
from edgecache.config.pem import Holds, PemFile

T = TypeVar("T")
DECLARED = "edgecache.config.setting"  # the key of a Settings field's metadata


@dataclass(frozen=True)
class Computed(Generic[T]):
    """A default worked out when Settings is made (from the environment, say)."""

    make: Callable[[], T]


@dataclass(frozen=True)
class Setting:
    """One declared setting; `attr` (and `key`, where it is the attribute's name) are filled
    in from the Settings field it declares."""

    section: Section
    key: str
    kind: Kind[object]
    default: object
    flag: str | None = None  # the `serve` flag's help, if the setting has a flag
    example: object = None  # written in the example file instead of the default
    suggest: object = None  # written after the default in the example file: `# e.g. ...`
    formerly: str | None = None  # "section.key" it was known as, still read with a warning
    pairs_with: str | None = None  # a private key's certificate: its key in this section
    attr: str = ""

    @property
    def name(self) -> str:
        """The setting as messages name it: `section.key`."""
        return f"{self.section.name}.{self.key}"

    @property
    def flag_name(self) -> str:
        """Its `serve` flag, which is also how a message names a value given on the command
        line."""
        return f"--{self.attr.replace('_', '-')}"


@dataclass(frozen=True)
class Section:
    """A table of the settings file; its intro opens the table in the example file."""

    name: str
    intro: str = ""

    def setting(
        self,
        kind: Kind[T],
        default: T | Computed[T],
        *,
        key: str = "",
        flag: str | None = None,
        example: T | None = None,
        suggest: T | None = None,
        formerly: str | None = None,
    ) -> T:
        """A field of Settings declaring a setting of this section (`key` defaults to the
        field's name)."""
        return _field(Setting(self, key, kind, default, flag, example, suggest, formerly), default)

    def pem_file(
        self, holds: Holds, *, key: str = "", flag: str | None = None, suggest: str | None = None
    ) -> Path | None:
        """A certificate or a CA (PEM), unset by default; `suggest` is a path."""
        suggestion = None if suggest is None else Path(suggest)
        kind = OrUnset(PemFile(holds))
        return self.setting(kind, None, key=key, flag=flag, suggest=suggestion)

    def private_key(
        self, *, of: str, key: str = "", flag: str | None = None, suggest: str | None = None
    ) -> Path | None:
        """The private key (PEM) of the certificate that this section's key `of` sets: the
        certificate needs it unless its own file holds it too (see checks.py)."""
        suggestion = None if suggest is None else Path(suggest)
        kind = OrUnset(PemFile("private key"))
        declared = Setting(self, key, kind, None, flag, suggest=suggestion, pairs_with=of)
        return _field(declared, None)


def _field(declared: Setting, default: T | Computed[T]) -> T:
    """The dataclass field of Settings that `declared` declares."""
    metadata = {DECLARED: declared}
    if isinstance(default, Computed):
        return field(default_factory=default.make, metadata=metadata)
    return field(default=default, metadata=metadata)
