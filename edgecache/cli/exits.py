"""How a command ends: its exit statuses, and the one line a bad setting gets."""

from __future__ import annotations

import sys

from edgecache.config import ConfigError

EXIT_FAILED = 1
EXIT_CONFIG = 2


def config_error(exc: ConfigError) -> int:
    print(f"edgecache: invalid configuration: {exc}", file=sys.stderr)
    return EXIT_CONFIG
