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
from edgecache.upstream.budget import BOOT, BOOT_HOLD, BURST, PREFETCH, Kind, UplinkBudget
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
        after_the_boot = paid + BOOT_HOLD  # the prefetches wait until the boot is over
        assert granted == pytest.approx(
            {
                "boot": paid,
                "prefetch 1": after_the_boot,
                # the bucket filled up while they waited
                "prefetch 2": after_the_boot - BURST + step,
            }
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


async def take_in_turn(uplink: UplinkBudget, kind: Callable[[], Kind], until: float) -> list[float]:
    """Take PIECE after PIECE until `until` (simulated time); when each was granted."""
    loop = asyncio.get_running_loop()
    granted = []
    while loop.time() < until:
        await uplink.take(PIECE, kind)
        granted.append(loop.time())
    return granted


async def boot_every(uplink: UplinkBudget, period: float, until: float) -> list[float]:
    """Take PIECE as a boot every `period` seconds until `until`; how long each one waited."""
    loop = asyncio.get_running_loop()
    waits = []
    for number in range(round(until / period)):
        if (later := number * period - loop.time()) > 0:
            await asyncio.sleep(later)  # simulated time
        asked = loop.time()
        await uplink.take(PIECE, boot)
        waits.append(loop.time() - asked)
    return waits


def test_a_prefetch_takes_nothing_while_a_boot_is_under_way_and_all_once_it_is_over() -> None:
    """A boot that wants half of the rate (a link that gives it no more) gets all it asks at
    once, and the prefetch nothing; after the boot, the prefetch gets the whole rate."""

    async def scenario() -> None:
        uplink, metrics, _ = budget()
        boot_waits, prefetched = await asyncio.gather(
            boot_every(uplink, period=2 * PIECE / RATE, until=10),
            take_in_turn(uplink, prefetch, until=20),
        )
        assert taken(metrics, BOOT) == len(boot_waits) * PIECE == RATE * 10 / 2
        assert max(boot_waits) == 0  # each piece at once: nothing went before it
        last_boot = 10 - 2 * PIECE / RATE
        assert prefetched[0] == pytest.approx(last_boot + BOOT_HOLD)
        free = RATE * (prefetched[-1] - prefetched[0])  # and from then on, the whole rate
        assert taken(metrics, PREFETCH) == pytest.approx(free, abs=PIECE + RATE * BURST)

    virtualtime.run(scenario())


def test_a_prefetch_takes_what_a_boot_that_trickles_leaves() -> None:
    """A boot that takes a piece every two seconds (a slow region) leaves the prefetch all but
    its pieces and the BOOT_HOLD after each."""

    async def scenario() -> None:
        uplink, metrics, _ = budget()
        boot_waits, prefetched = await asyncio.gather(
            boot_every(uplink, period=2, until=20),
            take_in_turn(uplink, prefetch, until=20),
        )
        # At most the prefetch piece granted just before.
        assert max(boot_waits) == pytest.approx(PIECE / RATE)
        assert taken(metrics, BOOT) == 10 * PIECE
        elapsed = prefetched[-1]
        left = RATE * elapsed - 10 * PIECE
        assert left - 10 * RATE * BOOT_HOLD <= taken(metrics, PREFETCH) <= left + PIECE

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
