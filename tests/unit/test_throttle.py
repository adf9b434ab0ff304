"""ThrottledLog: a bounded number of lines per period, and a count of the ones left out."""

from __future__ import annotations

import logging

import pytest

from edgecache.throttle import ThrottledLog


def test_lines_beyond_the_bound_are_counted_and_reported_on_the_next_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    throttled = ThrottledLog(
        logging.getLogger("test.throttle"), logging.INFO, lines=3, period=60, clock=lambda: now[0]
    )
    caplog.set_level(logging.INFO, "test.throttle")
    for number in range(50):
        throttled.log("bad request %d", number)
    assert [r.getMessage() for r in caplog.records] == [
        "bad request 0",
        "bad request 1",
        "bad request 2",
    ]
    now[0] += 59.9
    throttled.log("bad request %d", 50)
    assert len(caplog.records) == 3
    now[0] += 0.1  # a new period
    throttled.log("bad request %d", 51)
    throttled.log("bad request %d", 52)
    assert [r.getMessage() for r in caplog.records[3:]] == [
        "bad request 51 (48 more like it were not logged)",
        "bad request 52",
    ]
