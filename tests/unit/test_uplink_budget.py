"""The uplink budget: boots first, prefetches on what boots leave, the rate over time.

Every test runs on simulated time (tests.virtualtime), through a clock handed to the budget
that counts the timers it sets: seconds of traffic take milliseconds, and nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from edgecache.metrics import Metrics
from edgecache.upstream.budget import BOOT, BURST, PREFETCH, Kind, UplinkBudget
from tests import virtualtime

RATE = 1000.0  # bytes per second
PIECE = 100


@dataclass
class CountingClock:
    """The running loop's time, counting the timers the budget sets."""

    loop: asyncio.AbstractEventLoop
    timers: int = 0

    def time(self) -> float:
        return self.loop.time()

    def call_at(self, when: float, callback: Callable[[], object]) -> object:
        self.timers += 1
        return self.loop.call_at(when, callback)


def boot() -> Kind:
    return BOOT


def prefetch() -> Kind:
    return PREFETCH


def taken(metrics: Metrics, kind: Kind) -> float:
    value = metrics.registry.get_sample_value("edgecache_uplink_bytes_total", {"class": kind})
    return value or 0.0


def waited(metrics: Metrics, kind: Kind) -> float:
    value = metrics.registry.get_sample_value(
        "edgecache_uplink_wait_seconds_total", {"class": kind}
    )
    return value or 0.0


def budget(rate: float | None = RATE) -> tuple[UplinkBudget, Metrics, CountingClock]:
    metrics = Metrics()
    clock = CountingClock(asyncio.get_running_loop())
    return UplinkBudget(rate, metrics, clock), metrics, clock


async def grant_times(
    uplink: UplinkBudget, requests: list[tuple[str, Callable[[], Kind]]]
) -> dict[str, float]:
    """Make the requests in order (PIECE bytes each); when each was granted."""
    loop = asyncio.get_running_loop()
    granted: dict[str, float] = {}

    async def ask(name: str, kind: Callable[[], Kind]) -> None:
        await uplink.take(PIECE, kind)
        granted[name] = loop.time()

    await asyncio.gather(*(ask(name, kind) for name, kind in requests))
    return granted


def test_a_boot_request_goes_before_the_prefetch_requests_waiting() -> None:
    async def scenario() -> None:
        uplink, metrics, _ = budget()
        await uplink.take(1000, prefetch)  # an idle bucket grants at once, into a second's debt
        paid = 1.0 - BURST
        granted = await grant_times(
            uplink, [("prefetch 1", prefetch), ("prefetch 2", prefetch), ("boot", boot)]
        )
        step = PIECE / RATE
        assert granted == pytest.approx(
            {"boot": paid, "prefetch 1": paid + step, "prefetch 2": paid + 2 * step}
        )
        assert waited(metrics, BOOT) == pytest.approx(paid)
        assert taken(metrics, BOOT) == PIECE
        assert taken(metrics, PREFETCH) == 1000 + 2 * PIECE

    virtualtime.run(scenario())


def test_the_boots_go_in_the_order_they_asked_and_so_do_the_prefetches() -> None:
    async def scenario() -> None:
        uplink, _, _ = budget()
        await uplink.take(1000, prefetch)
        order = [("p1", prefetch), ("b1", boot), ("p2", prefetch), ("b2", boot), ("b3", boot)]
        granted = await grant_times(uplink, order)
        assert sorted(granted, key=granted.__getitem__) == ["b1", "b2", "b3", "p1", "p2"]

    virtualtime.run(scenario())


def test_a_prefetch_a_caller_joins_while_it_waits_goes_first_at_once() -> None:
    async def scenario() -> None:
        uplink, metrics, _ = budget()
        await uplink.take(1000, prefetch)
        joined: list[Kind] = [PREFETCH]
        other = asyncio.ensure_future(uplink.take(PIECE, prefetch))
        promoted = asyncio.ensure_future(uplink.take(PIECE, lambda: joined[0]))
        await asyncio.sleep(0)  # let both reach their wait
        joined[0] = BOOT  # a caller arrives for the second fill
        await promoted
        assert not other.done()
        assert taken(metrics, BOOT) == PIECE
        await other

    virtualtime.run(scenario())


def test_prefetches_take_what_boots_leave() -> None:
    """A boot that wants half of the rate gets all it asks at once; a prefetch that wants
    everything gets the other half."""

    async def scenario() -> None:
        uplink, metrics, _ = budget()
        loop = asyncio.get_running_loop()
        boot_waits: list[float] = []

        async def booting() -> None:
            for number in range(50):  # PIECE every 0.2 s: half the rate, for 10 s
                await asyncio.sleep(number * 0.2 - loop.time())  # simulated time
                asked = loop.time()
                await uplink.take(PIECE, boot)
                boot_waits.append(loop.time() - asked)

        async def prefetching() -> None:
            while loop.time() < 10:
                await uplink.take(PIECE, prefetch)

        await asyncio.gather(booting(), prefetching())
        assert taken(metrics, BOOT) == 50 * PIECE
        assert max(boot_waits) <= PIECE / RATE  # at most the piece granted just before it
        assert taken(metrics, PREFETCH) == pytest.approx(10 * RATE - 50 * PIECE, abs=2 * PIECE)

    virtualtime.run(scenario())


def test_over_time_the_rate_is_what_is_taken_shared_in_turn_within_a_class() -> None:
    async def scenario() -> None:
        uplink, metrics, clock = budget()
        loop = asyncio.get_running_loop()
        turns: list[int] = []

        async def taker(number: int) -> None:
            while loop.time() < 100:
                await uplink.take(PIECE, prefetch)
                turns.append(number)

        await asyncio.gather(*(taker(number) for number in range(3)))
        elapsed = loop.time()  # the last grant: past 100 s by the requests then waiting
        assert 100 <= elapsed <= 100 + 3 * PIECE / RATE
        # What the idle bucket held at the start, the rate since, and the last grant's debt.
        assert len(turns) * PIECE == pytest.approx(RATE * (elapsed + BURST) + PIECE)
        # The first taker is granted at once and asks again before the others ask at all;
        # from then on the takers go in turn.
        assert turns[1:] == ([0, 1, 2] * len(turns))[: len(turns) - 1]
        # One timer per grant at most: nothing spins while the takers wait.
        assert clock.timers <= taken(metrics, PREFETCH) / PIECE


def test_a_cancelled_request_is_never_granted_and_the_next_one_takes_its_turn() -> None:
    async def scenario() -> None:
        uplink, metrics, _ = budget()
        await uplink.take(1000, prefetch)
        leaving = asyncio.ensure_future(uplink.take(PIECE, boot))
        staying = asyncio.ensure_future(uplink.take(PIECE, prefetch))
        await asyncio.sleep(0)  # let both reach their wait
        leaving.cancel()
        await staying
        assert asyncio.get_running_loop().time() == pytest.approx(1.0 - BURST)
        assert taken(metrics, BOOT) == 0
        assert uplink.waiting() == 0
        with pytest.raises(asyncio.CancelledError):
            await leaving

    virtualtime.run(scenario())


def test_without_a_rate_nothing_waits_and_the_bytes_are_counted() -> None:
    async def scenario() -> None:
        uplink, metrics, clock = budget(rate=None)
        for _ in range(1000):
            await uplink.take(2**20, prefetch)
        await uplink.take(2**20, boot)
        assert asyncio.get_running_loop().time() == 0
        assert clock.timers == 0
        assert taken(metrics, PREFETCH) == 1000 * 2**20
        assert taken(metrics, BOOT) == 2**20
        assert metrics.registry.get_sample_value("edgecache_uplink_max_rate_bytes") == 0

    virtualtime.run(scenario())
