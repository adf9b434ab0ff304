"""A prefetch's stream from the region under a budget: its connection's receive window clamped,
marked bulk, and closed after it; a boot's connection is left as it was made, and reused."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edgecache.metrics import Metrics
from edgecache.store.priority import PREFETCH_WINDOW, FillPriority
from edgecache.upstream.budget import UplinkBudget
from edgecache.upstream.bulk import BULK

RATE = 20 * 2**20
IMAGE = "3b9c2a31-4a0e-4d9c-9b1e-0c1c5f0a1a11"


@dataclass
class Region:
    """Sends half an answer, and the rest once `more` is set."""

    url: str
    more: asyncio.Event = field(default_factory=asyncio.Event)
    peers: list[Any] = field(default_factory=list)  # the client's address, per request


@pytest.fixture
async def region() -> AsyncIterator[Region]:
    found = Region("")

    async def data(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        found.peers.append(request.transport.get_extra_info("peername"))
        response = web.StreamResponse()
        response.content_length = 200_000
        await response.prepare(request)
        await response.write(bytes(100_000))
        await found.more.wait()
        found.more.clear()
        await response.write(bytes(100_000))
        return response

    app = web.Application()
    app.router.add_get("/file", data)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    found.url = str(server.make_url("/file"))
    yield found
    await server.close()


def options(response: aiohttp.ClientResponse) -> tuple[int, int]:
    """The window clamp and the ToS of the response's connection."""
    assert response.connection is not None
    assert response.connection.transport is not None
    sock = response.connection.transport.get_extra_info("socket")
    return (
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP),
        sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
    )


async def two_streams(region: Region, priority: FillPriority) -> list[tuple[int, int]]:
    """Two streams of IMAGE one after the other in one session; each one's socket options."""
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.get(region.url) as response:
                priority.stream(IMAGE).carried_by(response)
                seen.append(options(response))
                region.more.set()
                await response.read()
    return seen


async def test_a_prefetchs_connection_is_clamped_marked_and_closed_after(region: Region) -> None:
    seen = await two_streams(region, FillPriority(UplinkBudget(RATE, Metrics())))
    assert seen == [(int(RATE * PREFETCH_WINDOW), BULK)] * 2
    assert region.peers[0] != region.peers[1]  # the second stream had a new connection


async def test_a_boots_connection_is_left_alone_and_reused(region: Region) -> None:
    priority = FillPriority(UplinkBudget(RATE, Metrics()))
    with priority.caller_waits(IMAGE):
        seen = await two_streams(region, priority)
    assert all(clamp != int(RATE * PREFETCH_WINDOW) and tos != BULK for clamp, tos in seen)
    assert region.peers[0] == region.peers[1]


async def test_without_a_budget_a_prefetchs_connection_is_left_alone(region: Region) -> None:
    seen = await two_streams(region, FillPriority(UplinkBudget(None, Metrics())))
    assert all(tos != BULK for _, tos in seen)
    assert region.peers[0] == region.peers[1]
