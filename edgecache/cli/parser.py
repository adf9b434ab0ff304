"""The command line's grammar: `edgecache serve | status | cache ... | warm`."""

from __future__ import annotations

import argparse

from edgecache import __version__
from edgecache.cli import serve, warm


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecache", description="A verified read-through cache for OpenStack Glance."
    )
    parser.add_argument("--version", action="version", version=f"edgecache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_command = commands.add_parser("serve", help="run the caching proxy")
    _config_flag(serve_command)
    serve.add_setting_flags(serve_command)

    status = commands.add_parser("status", help="uplink, cache size, hit ratio, active fills")
    _admin_flags(status)

    cache = commands.add_parser("cache", help="list, evict, verify or clean cached images")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True)
    _admin_flags(cache_commands.add_parser("list", help="what is cached"))
    evict = cache_commands.add_parser("evict", help="drop one cached image")
    evict.add_argument("image_id")
    _admin_flags(evict)
    verify = cache_commands.add_parser(
        "verify", help="re-hash stored copies; corrupt ones are quarantined"
    )
    verify.add_argument("image_id", nargs="?")
    _admin_flags(verify)
    _admin_flags(cache_commands.add_parser("clean", help="remove the quarantined copies"))

    warm_command = commands.add_parser("warm", help="prefetch images into the running daemon")
    warm.add_arguments(warm_command)
    _admin_flags(warm_command)
    return parser


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="TOML file (default: $EDGECACHE_CONFIG or /etc/edgecache/edgecache.toml)",
    )


def _admin_flags(parser: argparse.ArgumentParser) -> None:
    _config_flag(parser)
    parser.add_argument("--socket", help="the daemon's admin socket (default: from the config)")
