"""PEM files named by settings, read when the settings are loaded: a typo or a file that holds
the wrong thing stops start-up instead of every TLS handshake."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from edgecache.config.errors import ConfigError
from edgecache.config.kinds import Kind

Holds = Literal["certificate", "private key", "CA"]
_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def holds_private_key(path: Path) -> bool:
    return bool(_PRIVATE_KEY.search(path.read_text(errors="replace")))


class PemFile(Kind[Path]):
    """A certificate (with its chain), a private key, or a CA: a file, or for a CA also a
    directory of them."""

    def __init__(self, holds: Holds) -> None:
        self._holds = holds
        self.metavar = "FILE|DIR" if holds == "CA" else "FILE"

    def parse(self, value: object, key: str) -> Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected the path of a PEM file")
        path = Path(value).expanduser()
        if self._holds == "CA" and path.is_dir():
            if not os.access(path, os.R_OK | os.X_OK):
                raise ConfigError(key, f"cannot read the directory {path}: permission denied")
            return path
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as exc:
            problem = (exc.strerror or str(exc)).lower()
            raise ConfigError(key, f"cannot read {path}: {problem}") from exc
        if self._holds == "private key":
            if not _PRIVATE_KEY.search(text):
                raise ConfigError(key, f"{path} holds no PEM private key")
        elif _CERTIFICATE not in text:
            raise ConfigError(key, f"{path} holds no PEM certificate")
        return path
