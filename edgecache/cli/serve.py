"""`edgecache serve`: a flag for each setting declared with one, and the daemon run with the
settings they give."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from edgecache import server, tls
from edgecache.allocator import keep_large_buffers
from edgecache.cli.exits import EXIT_FAILED, config_error
from edgecache.config import ConfigError, load_settings, resolve_config_path
from edgecache.config.catalog import SETTINGS
from edgecache.config.declaration import Computed, Setting
from edgecache.database.schema import IndexFromNewerRelease
from edgecache.logs import configure_logging

log = logging.getLogger(__name__)
_FLAGGED = tuple(setting for setting in SETTINGS if setting.flag is not None)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for setting in _FLAGGED:
        parser.add_argument(
            setting.flag_name,
            dest=setting.attr,
            help=_flag_help(setting),
            **setting.kind.flag_options(),
        )


def _flag_help(setting: Setting) -> str:
    if setting.default in (None, "", ()) or isinstance(setting.default, Computed):
        return str(setting.flag)
    default = setting.kind.toml(setting.default).strip('"')
    return f"{setting.flag} (default: {default})"


def flag_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags given, by Settings attribute (None where a flag was not given)."""
    overrides = {setting.attr: getattr(args, setting.attr) for setting in _FLAGGED}
    # --upstream names the fallbacks too, after the primary: URL,URL,...
    primary, *fallbacks = (args.upstream or "").split(",")
    overrides["upstream"] = primary.strip() or None
    overrides["fallbacks"] = fallbacks or None
    return overrides


def run(args: argparse.Namespace) -> int:
    deprecations: list[str] = []
    try:
        settings = load_settings(
            resolve_config_path(args.config), flag_overrides(args), warn=deprecations.append
        )
        tls.check(settings)
    except ConfigError as exc:
        return config_error(exc)
    configure_logging(settings.log_level, settings.log_format)
    for deprecation in deprecations:  # in the daemon's log, now that there is one
        log.warning("%s", deprecation)
    keep_large_buffers()
    try:
        asyncio.run(server.run(settings))
    except IndexFromNewerRelease as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return 0
