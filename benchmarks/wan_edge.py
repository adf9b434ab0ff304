"""The edge side of the wan scenario, run by benchmarks.wan inside the edge namespace.

`python -m benchmarks.wan_edge PLAN` (PLAN: the JSON benchmarks.wan writes): starts edgecache
daemons here, each on a new cache directory, in front of the synthetic Glance across the
shaped link, measures, and prints one JSON object. Progress goes to stderr.

- boot: the image's record and then its whole data, timed from the first request to the last
  byte, each byte checked (xxh3); alone, and once a warm of several images (queued as `glance
  cache-queue` does, fetched in parallel) is under way;
- warm rate: the image bytes fills took from the region per second during a warm (edgecache's
  own count, and the link's bytes, headers included);
- kill: a cold fill killed (SIGKILL) once 80% of the image is in, the daemon started again on
  the same cache directory, the image asked for again: the image bytes the region sent (its
  own count) against the image's size, and the bytes the link carried, headers taken out by
  the ratio a plain boot measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import xxhash

from benchmarks.procstat import OtherLoad

TOKEN = {"X-Auth-Token": "bench"}
LINK = Path("/sys/class/net/eth0/statistics/rx_bytes")  # the edge's side of the WAN
KILL_AT = 0.8


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def link_bytes() -> int:
    """Bytes the edge has received over the WAN link so far, headers included."""
    return int(LINK.read_text())


class Daemon:
    """One edgecache here, on its own cache directory and port."""

    def __init__(self, plan: dict[str, Any], name: str, max_rate: int | None) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{plan['port']}"
        self._plan = plan
        self._dir = Path(plan["workdir"]) / name
        self._config = self._dir.with_suffix(".toml")
        rate = f"max_rate = {max_rate}\n" if max_rate is not None else ""
        self._config.write_text(
            f"[upstream]\n{rate}\n[cache]\nprefetch_parallel = {plan['warm_images']}\n"
        )
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        with (self._dir.with_suffix(".log")).open("ab") as output:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgecache", "serve", "--config", str(self._config),
                "--upstream", self._plan["region"], "--listen", self.url.removeprefix("http://"),
                "--cache-dir", str(self._dir), "--max-size", "16GiB",
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "EDGECACHE_CONFIG": ""},
            )  # fmt: skip
        for _ in range(600):
            if self.process.returncode is not None:
                raise RuntimeError(f"edgecache exited with {self.process.returncode}")
            try:
                async with session.get(f"{self.url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)  # polling another process's port
        raise TimeoutError("edgecache did not start")

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), 30)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    def load(self) -> OtherLoad:
        """CPU used meanwhile by processes other than this scenario's."""
        assert self.process is not None
        return OtherLoad([self.process.pid, os.getpid(), *self._plan["pids"]])

    async def metric(self, session: aiohttp.ClientSession, sample: str) -> float:
        async with session.get(f"{self.url}/metrics") as response:
            text = await response.text()
        match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


class Edge:
    def __init__(self, plan: dict[str, Any], session: aiohttp.ClientSession) -> None:
        self.plan = plan
        self.session = session
        self._runs = 0

    def daemon(self, label: str, max_rate: int | None) -> Daemon:
        self._runs += 1
        return Daemon(self.plan, f"{self._runs:02d}-{label}", max_rate)

    async def new_image(self, size: int) -> str:
        url = f"{self.plan['region']}/_bench/images"
        async with self.session.post(url, json={"size": size}) as response:
            return str((await response.json())["id"])

    async def boot(self, daemon: Daemon, image_id: str, size: int) -> float:
        """Seconds from the record GET to the whole image's last byte, checked."""
        started = time.monotonic()
        async with self.session.get(f"{daemon.url}/v2/images/{image_id}", headers=TOKEN) as r:
            assert r.status == 200, f"the record: {r.status}"
            await r.read()
        hasher = xxhash.xxh3_128()
        url = f"{daemon.url}/v2/images/{image_id}/file"
        async with self.session.get(url, headers=TOKEN) as response:
            assert response.status == 200, f"the data: {response.status}"
            async for piece in response.content.iter_chunked(1 << 20):
                hasher.update(piece)
        elapsed = time.monotonic() - started
        assert hasher.hexdigest() == self.plan["xxh3"][str(size)], "wrong bytes"
        return elapsed

    async def warm(self, daemon: Daemon) -> None:
        """Queue the warm's images, as `glance cache-queue` does."""
        for _ in range(self.plan["warm_images"]):
            image_id = await self.new_image(self.plan["warm_size"])
            url = f"{daemon.url}/v2/cache/{image_id}"
            async with self.session.put(url, headers=TOKEN) as response:
                assert response.status == 202, f"cache-queue: {response.status}"

    async def boot_alone(self, max_rate: int | None) -> dict[str, Any]:
        daemon = self.daemon("boot-alone", max_rate)
        await daemon.start(self.session)
        try:
            size, load = self.plan["boot_size"], daemon.load()
            image_id = await self.new_image(size)
            before = link_bytes()
            seconds = await self.boot(daemon, image_id, size)
            return {
                "seconds": seconds,
                "link_overhead": (link_bytes() - before) / size,
                "other_load": load.cores(),
            }
        finally:
            await daemon.stop()

    async def boot_during_warm(self, max_rate: int | None) -> dict[str, Any]:
        daemon = self.daemon("boot-warm", max_rate)
        await daemon.start(self.session)
        try:
            size, load = self.plan["boot_size"], daemon.load()
            image_id = await self.new_image(size)
            await self.warm(daemon)
            await asyncio.sleep(self.plan["lead_in"])  # the warm at full speed first
            warm_before = await daemon.metric(self.session, "edgecache_fetched_bytes_total")
            seconds = await self.boot(daemon, image_id, size)
            fetched = await daemon.metric(self.session, "edgecache_fetched_bytes_total")
            return {
                "seconds": seconds,
                "warm_fills_left": await daemon.metric(self.session, "edgecache_fills_in_progress"),
                "warm_bytes_meanwhile": fetched - warm_before - size,
                "other_load": load.cores(),
            }
        finally:
            await daemon.stop()

    async def warm_rate(self, max_rate: int | None) -> dict[str, Any]:
        daemon = self.daemon("warm-rate", max_rate)
        await daemon.start(self.session)
        try:
            load = daemon.load()
            await self.warm(daemon)
            await asyncio.sleep(self.plan["lead_in"])
            t0, fetched0, link0 = await self._progress(daemon)
            await asyncio.sleep(self.plan["window"])  # the window measured
            t1, fetched1, link1 = await self._progress(daemon)
            return {
                "bytes_per_second": (fetched1 - fetched0) / (t1 - t0),
                "link_bytes_per_second": (link1 - link0) / (t1 - t0),
                "warm_fills_left": await daemon.metric(self.session, "edgecache_fills_in_progress"),
                "other_load": load.cores(),
            }
        finally:
            await daemon.stop()

    async def _region_count(self, what: str, image_id: str) -> Any:
        """What the synthetic Glance counted for the image (data-bytes, data-ranges)."""
        async with self.session.get(f"{self.plan['region']}/_bench/{what}") as response:
            return (await response.json()).get(image_id)

    async def _progress(self, daemon: Daemon) -> tuple[float, float, int]:
        """Now, the bytes fills took from the region, the bytes the link carried."""
        fetched = await daemon.metric(self.session, "edgecache_fetched_bytes_total")
        return time.monotonic(), fetched, link_bytes()

    async def kill_and_finish(self, overhead: float) -> dict[str, Any]:
        size = self.plan["kill_size"]
        daemon = self.daemon("kill", None)
        await daemon.start(self.session)
        try:
            load = daemon.load()
            image_id = await self.new_image(size)
            before = link_bytes()
            first = asyncio.create_task(self.boot(daemon, image_id, size))
            fetched = 0.0
            while fetched < KILL_AT * size:
                await asyncio.sleep(0.02)  # polling the daemon's progress
                fetched = await daemon.metric(self.session, "edgecache_fetched_bytes_total")
            other_load = load.cores()
            await daemon.kill()
            log(f"killed at {fetched / size:.0%} of the fill")
            try:
                await first
                raise AssertionError("the transfer completed although its daemon was killed")
            except aiohttp.ClientError:
                pass  # the caller's transfer broke; it asks again, as nova would
            await daemon.start(self.session)
            seconds = await self.boot(daemon, image_id, size)
            carried = link_bytes() - before
            ranges = await self._region_count("data-ranges", image_id)
            sent = await self._region_count("data-bytes", image_id)
            return {
                "killed_at": fetched / size,
                "region_bytes": sent,
                "taken_over_image": sent / size,
                "link_bytes": carried,
                "link_over_image": carried / overhead / size,
                "region_data_requests": ranges,
                "seconds_after_restart": seconds,
                "other_load": other_load,
            }
        finally:
            await daemon.stop()


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        edge = Edge(plan, session)
        results: dict[str, Any] = {}
        for mode in plan["modes"]:
            boot_rate = plan["boot_max_rate"] if mode == "on" else None
            warm_rate = plan["half_rate"] if mode == "on" else None
            log(f"budget {mode}: a boot alone")
            alone = await edge.boot_alone(boot_rate)
            log(f"budget {mode}: a boot during a warm")
            during = await edge.boot_during_warm(boot_rate)
            log(f"budget {mode}: the uplink rate during a warm")
            rate = await edge.warm_rate(warm_rate)
            results[mode] = {"boot_alone": alone, "boot_during_warm": during, "warm_rate": rate}
        if plan["kill"]:
            log("a cold fill killed at 80%, restarted, finished")
            overhead = results[plan["modes"][0]]["boot_alone"]["link_overhead"]
            results["kill"] = await edge.kill_and_finish(overhead)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("plan", type=Path)
    plan = json.loads(parser.parse_args().plan.read_text())
    print(json.dumps(asyncio.run(run(plan))))


if __name__ == "__main__":
    main()
