"""The `edgecache` command line: the daemon (serve), and the operator's commands that talk to
it (status, cache, warm)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from edgecache.admin_client import AdminError
from edgecache.cli import admin, serve, warm
from edgecache.cli.exits import EXIT_FAILED, config_error
from edgecache.cli.parser import build_parser
from edgecache.config import ConfigError, load_settings, resolve_config_path
from edgecache.warm import WarmError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve.run(args)
    try:  # the operator's commands only read where the daemon is
        settings = load_settings(
            resolve_config_path(args.config),
            {"admin_socket_path": args.socket},
            require_upstream=False,
        )
    except ConfigError as exc:
        return config_error(exc)
    command = warm.run if args.command == "warm" else admin.run
    try:
        return asyncio.run(command(args, settings))
    except (AdminError, WarmError) as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return EXIT_FAILED
