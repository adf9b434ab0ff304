"""`edgecache warm`: its command line, and the images it fetches into the running daemon."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgecache.admin_client import AdminClient
from edgecache.cli.exits import EXIT_FAILED
from edgecache.config import Settings
from edgecache.console import human_duration, human_size, table
from edgecache.progress import LogProgress, TerminalProgress
from edgecache.warm import Outcome, Progress, Warmer, WarmError, token_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image ids or names")
    parser.add_argument("--all-public", action="store_true", help="every public image")
    parser.add_argument("--tag", action="append", default=[], help="images with this tag")
    parser.add_argument("--from-file", type=Path, help="ids or names, one a line (# comments)")
    parser.add_argument("--parallel", type=int, default=2, help="images fetched at once")
    parser.add_argument("--pin", action="store_true", help="protect them from eviction")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="hand them to the daemon's prefetch queue and return at once (the daemon fetches "
        "them across its restarts, in its [prefetch] window; Glance's cache_image policy "
        "decides, as for glance cache-queue)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="queue them as --queue does, then follow each to the end now, with progress",
    )
    parser.add_argument("--endpoint", help="edgecache's URL (default: its listen address)")
    parser.add_argument("--token", help="a Keystone token (else OS_AUTH_TOKEN, else OS_* auth)")


async def run(args: argparse.Namespace, settings: Settings) -> int:
    if not (args.images or args.all_public or args.tag or args.from_file):
        raise WarmError("nothing to warm: name images, or use --all-public, --tag, --from-file")
    if args.parallel < 1:
        raise WarmError("--parallel must be at least 1")
    if args.pin and args.queue and not args.wait:
        raise WarmError("--pin needs the images cached first: add --wait, or leave out --queue")
    endpoint = args.endpoint or _own_endpoint(settings)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=settings.read_timeout)
    pin = own_certificate_pin(settings) if not args.endpoint else None
    async with (
        aiohttp.ClientSession(timeout=timeout) as auth_session,
        aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(ssl=pin or True)
        ) as session,
    ):
        token = await token_from(args.token, os.environ, auth_session)
        warmer = Warmer(session, endpoint, token)
        targets = await warmer.select(
            args.images, all_public=args.all_public, tags=args.tag, from_file=args.from_file
        )
        refused: list[Outcome] = []
        if args.queue or args.wait:
            queued = await warmer.queue(targets)
            if not args.wait:
                _print_queued(queued)
                return EXIT_FAILED if any(outcome.failed for outcome in queued) else 0
            refused = [outcome for outcome in queued if outcome.failed]
            targets = [outcome.target for outcome in queued if not outcome.failed]
        progress: Progress = TerminalProgress() if sys.stderr.isatty() else LogProgress()
        outcomes = refused + await warmer.warm(targets, args.parallel, progress)
    if args.pin:
        await _pin(settings, outcomes)
    _print_summary(outcomes)
    return EXIT_FAILED if any(outcome.failed for outcome in outcomes) else 0


async def _pin(settings: Settings, outcomes: list[Outcome]) -> None:
    async with AdminClient(settings.admin_socket) as admin:
        for outcome in outcomes:
            if not outcome.failed:
                await admin.pin(outcome.target.id)


def _print_summary(outcomes: list[Outcome]) -> None:
    _print_outcomes(outcomes)
    failed = sum(outcome.failed for outcome in outcomes)
    print(f"{len(outcomes)} images: {len(outcomes) - failed} in the cache, {failed} failed")


def _print_queued(outcomes: list[Outcome]) -> None:
    _print_outcomes(outcomes)
    failed = sum(outcome.failed for outcome in outcomes)
    print(
        f"{len(outcomes)} images: {len(outcomes) - failed} queued, {failed} refused; the daemon "
        "fetches those queued (edgecache status shows their progress)"
    )


def _print_outcomes(outcomes: list[Outcome]) -> None:
    rows = [
        (
            o.target.id,
            o.target.name or "",
            human_size(o.target.size or 0),
            o.result + (f": {o.detail}" if o.detail else ""),
            human_duration(o.elapsed),
            f"{human_size(o.rate)}/s" if o.received else "",
        )
        for o in outcomes
    ]
    print(table(["IMAGE", "NAME", "SIZE", "RESULT", "TIME", "RATE"], rows))


def own_certificate_pin(settings: Settings) -> aiohttp.Fingerprint | None:
    """The daemon's own certificate, pinned: its listen address on this host (127.0.0.1) is
    rarely a name the certificate carries, and the configured file says exactly what to expect."""
    if settings.tls_cert is None:
        return None
    try:
        leaf = x509.load_pem_x509_certificates(settings.tls_cert.read_bytes())[0]
    except (OSError, ValueError) as exc:
        raise WarmError(f"cannot read server.tls_cert {settings.tls_cert}: {exc}") from exc
    der = leaf.public_bytes(serialization.Encoding.DER)
    return aiohttp.Fingerprint(hashlib.sha256(der).digest())


def _own_endpoint(settings: Settings) -> str:
    host = settings.listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_cert else "http"
    return f"{scheme}://{host}:{settings.listen_port}"
