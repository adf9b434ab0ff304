"""The daemon process: slow or silent clients do not pile up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from tests.conftest import SpawnEdgecache


async def test_slow_and_silent_clients_are_closed_and_others_served(
    spawn_edgecache: SpawnEdgecache, glance_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "edgecache.toml"
    config.write_text("[server]\nclient_idle_timeout = 0.5\n")
    _, url = await spawn_edgecache(glance_url, tmp_path / "cache", "--config", str(config))
    host, port = url.removeprefix("http://").split(":")
    silent = [await asyncio.open_connection(host, int(port)) for _ in range(20)]
    dribbling = [await asyncio.open_connection(host, int(port)) for _ in range(20)]

    async def dribble(writer: asyncio.StreamWriter) -> None:
        for byte in b"GET /versions HTTP/1.1\r\nHost: x\r\nX-Slow: ":
            if writer.is_closing():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)  # the attack itself: one byte every 100 ms

    senders = [asyncio.create_task(dribble(writer)) for _, writer in dribbling]
    async with aiohttp.ClientSession() as session, session.get(f"{url}/healthz") as resp:
        assert resp.status == 200  # served while 40 bad clients hang on
    for reader, _ in silent + dribbling:
        # Closed by the daemon (EOF), long before aiohttp's own default of an hour.
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    for sender in senders:
        sender.cancel()
    for _, writer in silent + dribbling:
        writer.close()
