"""The `edgecache` command line: the daemon, and the operator's commands that talk to it."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edgecache import __version__, server, tls
from edgecache.admin_client import AdminClient, AdminError
from edgecache.allocator import keep_large_buffers
from edgecache.config import ConfigError, Settings, load_settings, resolve_config_path
from edgecache.console import human_age, human_duration, human_size, table
from edgecache.database.schema import IndexFromNewerRelease
from edgecache.logs import LOG_FORMATS, configure_logging
from edgecache.progress import LogProgress, TerminalProgress
from edgecache.warm import Outcome, Progress, Warmer, WarmError, token_from

EXIT_FAILED = 1
EXIT_CONFIG = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgecache", description="A verified read-through cache for OpenStack Glance."
    )
    parser.add_argument("--version", action="version", version=f"edgecache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the caching proxy")
    _config_flag(serve)
    serve.add_argument(
        "--upstream",
        help="the regional glance-api URL; more, comma-separated, are fallbacks in order",
    )
    serve.add_argument(
        "--upstream-ca-file",
        help="CA bundle (file or directory) the upstream's certificate is checked against",
    )
    serve.add_argument("--upstream-client-cert", help="client certificate (PEM) for the upstream")
    serve.add_argument("--upstream-client-key", help="its private key (PEM)")
    serve.add_argument(
        "--upstream-verify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="verify the upstream's certificate and name (default: yes; no is for labs only)",
    )
    serve.add_argument("--listen", help="HOST:PORT to serve on (default 127.0.0.1:9292)")
    serve.add_argument("--cache-dir", help="where cached images and the index live")
    serve.add_argument("--max-size", help="cache capacity, e.g. 500MiB, 20GiB, 1.5TB")
    serve.add_argument("--log-format", choices=LOG_FORMATS, help="text (default) or json")

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

    warm = commands.add_parser("warm", help="prefetch images into the running daemon")
    warm.add_argument("images", nargs="*", metavar="IMAGE", help="image ids or names")
    warm.add_argument("--all-public", action="store_true", help="every public image")
    warm.add_argument("--tag", action="append", default=[], help="images with this tag")
    warm.add_argument("--from-file", type=Path, help="ids or names, one a line (# comments)")
    warm.add_argument("--parallel", type=int, default=2, help="images fetched at once")
    warm.add_argument("--pin", action="store_true", help="protect them from eviction")
    warm.add_argument(
        "--queue",
        action="store_true",
        help="hand them to the daemon's prefetch queue and return at once (the daemon fetches "
        "them across its restarts, in its [prefetch] window; Glance's cache_image policy "
        "decides, as for glance cache-queue)",
    )
    warm.add_argument(
        "--wait",
        action="store_true",
        help="queue them as --queue does, then follow each to the end now, with progress",
    )
    warm.add_argument("--endpoint", help="edgecache's URL (default: its listen address)")
    warm.add_argument("--token", help="a Keystone token (else OS_AUTH_TOKEN, else OS_* auth)")
    _admin_flags(warm)
    return parser


def _config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="TOML file (default: $EDGECACHE_CONFIG or /etc/edgecache/edgecache.toml)",
    )


def _admin_flags(parser: argparse.ArgumentParser) -> None:
    _config_flag(parser)
    parser.add_argument("--socket", help="the daemon's admin socket (default: from the config)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"edgecache: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "serve":
        configure_logging(settings.log_level, settings.log_format)
        keep_large_buffers()
        try:
            asyncio.run(server.run(settings))
        except IndexFromNewerRelease as exc:
            print(f"edgecache: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return 0
    try:
        return asyncio.run(_client_command(args, settings))
    except (AdminError, WarmError) as exc:
        print(f"edgecache: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _settings(args: argparse.Namespace) -> Settings:
    if args.command == "serve":
        primary, *fallbacks = (args.upstream or "").split(",")
        overrides = {
            "upstream": primary.strip() or None,
            "fallbacks": fallbacks or None,
            "listen": args.listen,
            "cache_dir": args.cache_dir,
            "max_size": args.max_size,
            "log_format": args.log_format,
            "upstream_ca_file": args.upstream_ca_file,
            "upstream_client_cert": args.upstream_client_cert,
            "upstream_client_key": args.upstream_client_key,
            "upstream_verify": args.upstream_verify,
        }
        settings = load_settings(resolve_config_path(args.config), overrides)
        tls.check(settings)
        return settings
    overrides = {"admin_socket_path": args.socket}
    return load_settings(resolve_config_path(args.config), overrides, require_upstream=False)


async def _client_command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "warm":
        return await _warm(args, settings)
    async with AdminClient(settings.admin_socket) as admin:
        if args.command == "status":
            _print_status(await admin.status())
            return 0
        if args.cache_command == "list":
            _print_images(await admin.images())
            return 0
        if args.cache_command == "evict":
            await admin.evict(args.image_id)
            print(f"evicted {args.image_id}")
            return 0
        if args.cache_command == "clean":
            removed = await admin.clean_quarantine()
            files, size = removed["files"], human_size(removed["size"])
            print(f"removed {files} quarantined {'copy' if files == 1 else 'copies'} ({size})")
            return 0
        report = await admin.verify(args.image_id)
        rows = [(r["image_id"], human_size(r["size"]), r["problem"] or "ok") for r in report]
        print(table(["IMAGE", "SIZE", "RESULT"], rows))
        bad = [r for r in report if not r["ok"]]
        print(f"{len(report)} verified, {len(bad)} corrupt (quarantined, fetched again on use)")
        return EXIT_FAILED if bad else 0


def _print_status(status: dict[str, Any]) -> None:
    size, capacity, ratio = status["size"], status["capacity"], status["hit_ratio"]
    since = human_age(status["uplink_changed_at"])
    lines = [
        ("upstream", status["upstream"]),
        ("uplink", f"{status['uplink']} (since {since})"),
        *([("why", status["uplink_reason"])] if status.get("uplink_reason") else []),
        (
            "cache",
            f"{human_size(size)} of {human_size(capacity)} ({100 * size / capacity:.1f}%), "
            f"{status['cached_images']} images",
        ),
        ("hit ratio", "no image requests yet" if ratio is None else f"{100 * ratio:.1f}%"),
        ("active fills", str(len(status["fills"])) if status["fills"] else "none"),
        ("prefetch jobs", str(len(status["jobs"])) if status["jobs"] else "none"),
    ]
    print(table(None, lines))
    if status["fills"]:
        rows = [
            (f["image_id"], f"{human_size(f['written'])} / {human_size(f['size'])}")
            for f in status["fills"]
        ]
        print()
        print(table(["FILLING", "PROGRESS"], rows))
    _print_jobs(status["jobs"])


def _print_jobs(jobs: list[dict[str, Any]]) -> None:
    """Queued and running prefetches (glance cache-queue, edgecache warm --queue)."""
    if not jobs:
        return
    rows = [
        (
            job["image_id"],
            job["state"] + (f" ({job['why']})" if job["why"] else ""),
            f"{human_size(job['done'])} / {human_size(job['size'] or 0)}",
        )
        for job in jobs
    ]
    print()
    print(table(["JOB", "STATE", "PROGRESS"], rows))


def _print_images(images: list[dict[str, Any]]) -> None:
    rows = [
        (
            image["image_id"],
            image.get("name") or "",
            human_size(image["size"]),
            image.get("hits", ""),
            human_age(image["last_access"]) if image.get("hits") else "never",
            "yes" if image.get("pinned") else "",
            image["state"]
            + (f" {100 * image['written'] / image['size']:.0f}%" if "written" in image else ""),
        )
        for image in images
    ]
    print(table(["IMAGE", "NAME", "SIZE", "HITS", "LAST ACCESS", "PINNED", "STATE"], rows))


async def _warm(args: argparse.Namespace, settings: Settings) -> int:
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
