"""Callers that hang up mid-transfer (a cancelled boot, a timed-out client) are routine: the
daemon logs one line for each, never an error with a traceback, and goes on serving."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp

from tests.conftest import MiB, UpstreamServer
from tests.fakeglance import FakeGlance
from tests.reliability.conftest import Reporter
from tests.reliability.daemon import Daemons
from tests.reliability.helpers import download


async def test_hang_ups_mid_transfer_are_one_line_each_not_errors(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(os.urandom(48 * MiB), owner="p1")  # more than socket buffers hold
    daemon = await daemons.start(upstream_server.url, tmp_path / "cache")
    url = f"{daemon.url}/v2/images/{image.id}/file"
    headers = {"X-Auth-Token": token}
    sources: list[str] = []

    async def hang_up(session: aiohttp.ClientSession) -> None:
        async with session.get(url, headers=headers) as resp:
            sources.append(resp.headers["X-Edgecache-Source"])
            await resp.content.readexactly(MiB)
            resp.close()

    async with aiohttp.ClientSession() as session:
        await hang_up(session)  # on the fill
        assert (await download(session, url, image.data, headers)).kind == "exact"
        for _ in range(3):
            await hang_up(session)  # on the stored copy
        assert (await download(session, url, image.data, headers)).kind == "exact"
    assert await daemon.stop() == 0
    stderr = daemon.stderr()
    went_away = stderr.count("client went away")
    figures.note(
        f"4 callers hung up after 1 MiB of 48 ({sources}): {went_away} 'client went away' "
        f"lines, {stderr.count('Traceback')} tracebacks, {stderr.count(' ERROR ')} errors",
    )
    assert sources[0] == "fill"
    assert set(sources[1:]) == {"cache"}
    assert went_away == 4
    assert "Traceback" not in stderr
    assert " ERROR " not in stderr
