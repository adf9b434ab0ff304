"""The clients of the zone scenario, run by benchmarks.zone inside the zone's front namespace.

`python -m benchmarks.zone_clients --front URL --region URL --nodes URL,URL,URL --size N
--xxh3 HEX --clients 24`: waits until HAProxy routes to every node, creates a new image at the
synthetic Glance, starts every client at once, checks every body, and prints one JSON object:
seconds until the last client had the whole image, region data GETs, bytes each node served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import xxhash

TOKEN = {"X-Auth-Token": "bench"}
# HAProxy's checks (inter 1s, rise 2) take a node in two seconds after it answers.
CHECKS_RISE = 2.5


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _wait_for(session: aiohttp.ClientSession, urls: list[str]) -> None:
    for _ in range(600):
        if all([await _answers(session, url) for url in urls]):
            return
        await asyncio.sleep(0.05)  # polling other processes' readiness
    raise TimeoutError(f"not answering: {urls}")


async def _boot(session: aiohttp.ClientSession, url: str, expected: str) -> tuple[float, str]:
    """Download the image; the moment it was whole, and the problem if it was not right."""
    hasher = xxhash.xxh3_128()
    async with session.get(url, headers=TOKEN) as response:
        if response.status != 200:
            return time.monotonic(), f"status {response.status}"
        async for piece in response.content.iter_chunked(1 << 20):
            hasher.update(piece)
    problem = "" if hasher.hexdigest() == expected else "wrong bytes"
    return time.monotonic(), problem


async def _metric(session: aiohttp.ClientSession, url: str, sample: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def _served(session: aiohttp.ClientSession, url: str) -> float:
    sources = ("cache", "fill", "upstream")
    samples = [f'edgecache_served_bytes_total{{source="{source}"}}' for source in sources]
    return sum([await _metric(session, url, sample) for sample in samples])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    nodes = args.nodes.split(",")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=120)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await _wait_for(session, [f"{args.front}/healthz", *(f"{n}/healthz" for n in nodes)])
        await asyncio.sleep(CHECKS_RISE)  # HAProxy's own checks, which we cannot await
        async with session.post(f"{args.region}/_bench/images", json={"size": args.size}) as r:
            image_id = (await r.json())["id"]
        url = f"{args.front}/v2/images/{image_id}/file"
        started = time.monotonic()
        done = await asyncio.gather(*(_boot(session, url, args.xxh3) for _ in range(args.clients)))
        async with session.get(f"{args.region}/_bench/data-gets") as response:
            region_gets = (await response.json()).get(image_id, 0)
        served = [await _served(session, node) for node in nodes]
        siblings = [
            await _metric(session, node, "edgecache_sibling_fetched_bytes_total") for node in nodes
        ]
    return {
        "last_client_s": max(finished for finished, _ in done) - started,
        "region_gets": region_gets,
        "served_bytes": served,
        "sibling_fetched_bytes": siblings,
        "problems": [problem for _, problem in done if problem],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--front", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--nodes", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--xxh3", required=True)
    parser.add_argument("--clients", type=int, default=24)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
