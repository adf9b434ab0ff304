"""Settings from their declarations' defaults, overlaid by a TOML file, overlaid by the
command line's flags. Every problem is one ConfigError naming the key."""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgecache.config.catalog import BY_ATTR, BY_FORMER_NAME, BY_NAME
from edgecache.config.checks import check
from edgecache.config.errors import ConfigError
from edgecache.config.sections import SECTIONS
from edgecache.config.settings import Settings

DEFAULT_CONFIG_PATH = Path("/etc/edgecache/edgecache.toml")
CONFIG_ENV = "EDGECACHE_CONFIG"
log = logging.getLogger(__name__)
# Settings attribute -> (the key or flag as messages name it, its raw value)
_Raw = dict[str, tuple[str, object]]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc


def resolve_config_path(explicit: str | None) -> Path | None:
    """The file named by --config, else $EDGECACHE_CONFIG, else the default if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_settings(
    config_path: Path | None,
    overrides: Mapping[str, object],
    *,
    require_upstream: bool = True,
    warn: Callable[[str], None] = log.warning,
) -> Settings:
    """Build Settings from the TOML file (if any) with `overrides` on top.

    Overrides are keyed by Settings attribute (`upstream`, `listen`, `cache_dir`, `max_size`),
    and None leaves a setting as it is; a message names them by their `serve` flag. The client
    commands (status, cache, warm) only read where the daemon is: no upstream needed. A setting
    under its former name is read, and `warn` is told how to write it now.
    """
    raw = _from_file(read_toml(config_path), warn) if config_path is not None else {}
    for attr, value in overrides.items():
        if attr not in BY_ATTR:
            raise ConfigError(attr, "unknown setting")
        if value is not None:
            raw[attr] = (BY_ATTR[attr].flag_name, value)
    values: dict[str, Any] = {
        attr: BY_ATTR[attr].kind.parse(value, key) for attr, (key, value) in raw.items()
    }
    settings = Settings(**values)
    check(settings, require_upstream=require_upstream)
    return settings


def _from_file(document: dict[str, Any], warn: Callable[[str], None]) -> _Raw:
    known_sections = [section.name for section in SECTIONS]
    raw: _Raw = {}
    for section, table in document.items():
        if section not in known_sections:
            raise ConfigError(section, f"unknown section (known: {', '.join(known_sections)})")
        if not isinstance(table, dict):
            raise ConfigError(section, "must be a table")
        for key, value in table.items():
            name = f"{section}.{key}"
            setting = BY_NAME.get(name) or BY_FORMER_NAME.get(name)
            if setting is None:
                raise ConfigError(name, "unknown setting")
            if setting.attr in raw:  # under its name and its former name
                raise ConfigError(name, f"set twice (also as {raw[setting.attr][0]})")
            if name != setting.name:
                warn(
                    f"{name} is deprecated: move it to [{setting.section.name}] as {setting.key} "
                    "(it is read as that for now)"
                )
            raw[setting.attr] = (name, value)
    return raw
