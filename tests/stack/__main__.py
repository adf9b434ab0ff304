"""``python -m tests.stack install | up --base-dir DIR``.

``up`` prints the stack's URLs and admin credentials as one JSON object on stdout and runs
until SIGINT or SIGTERM, then stops every process it started.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from .errors import StackError
from .install import default_cache_root, ensure_stack_venv
from .openstack import OpenStackStack


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.command == "install":
            print(ensure_stack_venv(args.cache_root))
            return 0
        return _up(args.base_dir, args.cache_root)
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.stack", description=__doc__)
    parser.add_argument(
        "--cache-root",
        type=Path,
        default=None,
        help=f"where the stack venv is kept (default: {default_cache_root()})",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("install", help="only build (or find) the stack venv; print its path")
    up = commands.add_parser("up", help="run Keystone + Glance until SIGINT/SIGTERM")
    up.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="empty or missing directory for configs, databases, images and logs "
        "(default: a new /tmp/edgecache-stack-*)",
    )
    return parser


def _up(base_dir: Path | None, cache_root: Path | None) -> int:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    base = base_dir or Path(tempfile.mkdtemp(prefix="edgecache-stack-"))
    venv = ensure_stack_venv(cache_root)
    try:
        with OpenStackStack(base, venv=venv) as stack:
            print(json.dumps(stack.as_dict(), indent=2), flush=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:
        pass
    except SystemExit as exc:
        if exc.code != signal.SIGTERM:
            raise
    logging.getLogger(__name__).info("stack stopped at %s", time.strftime("%H:%M:%S"))
    return 0


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into an exception so that the stack's context manager cleans up."""
    raise SystemExit(signum)


if __name__ == "__main__":
    sys.exit(main())
