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
from pathlib import Path
from types import FrameType

from .errors import StackError
from .install import default_cache_root, ensure_stack_venv
from .openstack import OpenStackStack

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    parser = argparse.ArgumentParser(
        prog="python -m tests.stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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


class _Stop(Exception):
    """Raised by the signal handler to leave the ``with`` block that owns the stack."""


def _up(base_dir: Path | None, cache_root: Path | None) -> int:
    # Installed for SIGINT too: a background job of a non-interactive shell starts with
    # SIGINT ignored, and Python then never raises KeyboardInterrupt.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _stop_on_signal)
    base = base_dir or Path(tempfile.mkdtemp(prefix="edgecache-stack-"))
    try:
        venv = ensure_stack_venv(cache_root)
        with OpenStackStack(base, venv=venv) as stack:
            print(json.dumps(stack.as_dict(), indent=2), flush=True)
            while True:
                signal.pause()
    except _Stop:
        pass
    logging.getLogger(__name__).info("stack stopped; its files are in %s", base)
    return 0


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    """Stop once: later signals are ignored so that they cannot interrupt the cleanup."""
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
