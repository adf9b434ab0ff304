"""The one error a bad setting raises: it names the key, so the command line can print a single
clear line and exit 2 before anything is started."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
