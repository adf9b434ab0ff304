"""`edgecache status` and `edgecache cache list|evict|verify|clean`: questions and orders to
the running daemon over its admin socket."""

from __future__ import annotations

import argparse
import time
from typing import Any

from edgecache.admin_client import AdminClient
from edgecache.cli.exits import EXIT_FAILED
from edgecache.config import Settings
from edgecache.console import human_age, human_duration, human_size, table


async def run(args: argparse.Namespace, settings: Settings) -> int:
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
        ("kept partials", _kept_partials(status["kept_partials"])),
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
    _print_kept_partials(status["kept_partials"])


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


def _print_kept_partials(partials: list[dict[str, Any]]) -> None:
    """Partial fills kept to be resumed by the next fill of their image."""
    if not partials:
        return
    kept = [
        (
            p["image_id"],
            f"{human_size(p['kept'])} / {human_size(p['size'])}",
            human_duration(p["until"] - time.time()),
        )
        for p in partials
    ]
    print()
    print(table(["KEPT PARTIAL", "KEPT", "RESUMABLE FOR"], kept))


def _kept_partials(partials: list[dict[str, Any]]) -> str:
    """How many partial fills are kept to be resumed, and their bytes (max_size counts them)."""
    if not partials:
        return "none"
    return f"{len(partials)} ({human_size(sum(p['kept'] for p in partials))})"


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
