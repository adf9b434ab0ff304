"""What a benchmark run does: sizes, repetitions, concurrency, which scenarios; full or quick."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edgecache.config import ConfigError, parse_size

SCENARIOS = ("hit", "cold", "coalesce", "range", "metadata", "rss", "fills", "tls")
N = TypeVar("N", int, float)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "latest.json"


@dataclass(frozen=True)
class Settings:
    quick: bool
    image_size: int  # hit, cold, range and metadata scenarios
    coalesce_size: int
    large_size: int  # the memory (RSS) scenario
    repetitions: int
    streams: int  # the many-streams hit scenario
    coalesce_clients: int
    large_streams: int
    range_piece: int
    concurrency: int  # of the Range and metadata request loops
    loop_seconds: float  # how long each Range / metadata run lasts
    quiet_wait: float  # how long a run may wait for other processes to leave the CPUs
    client_processes: int
    nginx_workers: str
    edgecache_config: Path | None  # a TOML file of edgecache settings to measure
    scenarios: tuple[str, ...]
    out: Path
    keep: bool
    py_spy: str | None

    @property
    def sizes(self) -> list[int]:
        """Every image size the upstream must have content and digests for."""
        wanted = {self.image_size}
        if "coalesce" in self.scenarios:
            wanted.add(self.coalesce_size)
        if "rss" in self.scenarios:
            wanted.add(self.large_size)
        return sorted(wanted)


# Defaults of the options that differ between a full and a quick run.
_FULL = {
    "image_size": "1GiB",
    "coalesce_size": "1GiB",
    "large_size": "4GiB",
    "repetitions": "3",
    "loop_seconds": "3",
    "quiet_wait": "15",
}
_QUICK = {
    "image_size": "64MiB",
    "coalesce_size": "64MiB",
    "large_size": "128MiB",
    "repetitions": "1",
    "loop_seconds": "0.5",
    "quiet_wait": "0",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="edgecache vs nginx proxy_cache vs direct (synthetic) Glance, on loopback.",
    )
    p.add_argument("--quick", action="store_true", help="small images, one repetition (for CI)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--image-size", help="image for hit/cold/range/metadata (full: 1GiB)")
    p.add_argument("--coalesce-size", help="image for the coalescing scenario (full: 1GiB)")
    p.add_argument("--large-size", help="image for the memory scenario (full: 4GiB)")
    p.add_argument("--repetitions", help="runs per contender (full: 3)")
    p.add_argument("--streams", type=int, default=16, help="streams of the many-streams hit run")
    p.add_argument("--coalesce-clients", type=int, default=32)
    p.add_argument("--large-streams", type=int, default=32, help="streams of the memory run")
    p.add_argument("--range-piece", default="1MiB", help="size of each Range read")
    p.add_argument("--concurrency", type=int, default=8, help="of the Range/metadata loops")
    p.add_argument("--loop-seconds", help="length of a Range/metadata run (full: 3)")
    p.add_argument(
        "--quiet-wait",
        help="seconds each run may wait for other processes to go idle (full: 15, quick: 0)",
    )
    p.add_argument("--client-processes", type=int, default=2, help="load generator processes")
    p.add_argument("--nginx-workers", default="auto", help="nginx worker_processes")
    p.add_argument(
        "--edgecache-config",
        type=Path,
        help="TOML settings for edgecache (e.g. verify_reads = false) to measure them",
    )
    p.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of: {', '.join(SCENARIOS)}",
    )
    p.add_argument("--keep", action="store_true", help="keep the /tmp/bench-* work directory")
    p.add_argument(
        "--py-spy",
        metavar="BINARY",
        help="profile edgecache with this py-spy, one profile per scenario",
    )
    return p


def from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments; raises ConfigError for a bad value."""
    defaults = _QUICK if args.quick else _FULL

    def chosen(name: str) -> str:
        value = getattr(args, name)
        return defaults[name] if value is None else str(value)

    scenarios = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ConfigError("--only", f"unknown scenario(s) {', '.join(sorted(unknown))}")
    settings = Settings(
        quick=args.quick,
        image_size=parse_size(chosen("image_size"), "--image-size"),
        coalesce_size=parse_size(chosen("coalesce_size"), "--coalesce-size"),
        large_size=parse_size(chosen("large_size"), "--large-size"),
        repetitions=_number(int, chosen("repetitions"), "--repetitions"),
        streams=args.streams,
        coalesce_clients=args.coalesce_clients,
        large_streams=args.large_streams,
        range_piece=parse_size(args.range_piece, "--range-piece"),
        concurrency=args.concurrency,
        loop_seconds=_number(float, chosen("loop_seconds"), "--loop-seconds"),
        quiet_wait=_number(float, chosen("quiet_wait"), "--quiet-wait"),
        client_processes=args.client_processes,
        nginx_workers=args.nginx_workers,
        edgecache_config=args.edgecache_config,
        scenarios=scenarios,
        out=args.out,
        keep=args.keep,
        py_spy=args.py_spy,
    )
    if settings.range_piece > settings.image_size:
        raise ConfigError("--range-piece", "must not be larger than --image-size")
    if min(settings.repetitions, settings.streams, settings.client_processes) < 1:
        raise ConfigError("--repetitions/--streams/--client-processes", "must be at least 1")
    return settings


def _number(kind: type[N], text: str, key: str) -> N:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(key, f"expected a number, got {text!r}") from None
