"""The `edgecache` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from aiohttp import web

from edgecache import __version__
from edgecache.app import create_app
from edgecache.config import ConfigError, Settings, load_settings, resolve_config_path
from edgecache.logs import LOG_FORMATS, configure_logging

EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecache", description="A verified read-through cache for OpenStack Glance."
    )
    parser.add_argument("--version", action="version", version=f"edgecache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the caching proxy")
    serve.add_argument(
        "--config",
        help="TOML file (default: $EDGECACHE_CONFIG or /etc/edgecache/edgecache.toml if present)",
    )
    serve.add_argument("--upstream", help="the regional glance-api URL")
    serve.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:9292)")
    serve.add_argument("--cache-dir", help="where cached images and the index live")
    serve.add_argument("--max-size", help="cache capacity, e.g. 500MiB, 20GiB, 1.5TB")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {
        "upstream": args.upstream,
        "listen": args.listen,
        "cache_dir": args.cache_dir,
        "max_size": args.max_size,
        "log_format": args.log_format,
    }
    return load_settings(resolve_config_path(args.config), overrides)


def serve(settings: Settings) -> int:
    configure_logging(settings.log_level, settings.log_format)
    web.run_app(
        create_app(settings),
        host=settings.listen_host,
        port=settings.listen_port,
        access_log=None,  # edgecache.observe logs each request, without headers
        shutdown_timeout=settings.shutdown_timeout,
        print=lambda message: logging.getLogger("edgecache").info(message.strip()),
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"edgecache: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return serve(settings)
