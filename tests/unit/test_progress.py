"""The warm progress displays."""

from __future__ import annotations

import io
import re

from edgecache.progress import LogProgress, TerminalProgress
from edgecache.warm import Outcome, Target


def outcome(name: str, size: int, received: int) -> Outcome:
    result = Outcome(Target(id=f"id-{name}", name=name, size=size))
    result.received = received
    return result


def test_terminal_redraws_one_line_per_image_in_place() -> None:
    stream = io.StringIO()
    display = TerminalProgress(stream)
    first, second = outcome("cirros", 100 << 20, 0), outcome("ubuntu", 200 << 20, 0)
    display.started(first)
    display.started(second)
    first.received = 50 << 20
    display.finished(second)  # any event redraws everything
    screen = stream.getvalue()
    last_frame = screen.rsplit("\x1b[2F", 1)[-1]  # after moving back up over the two lines
    lines = [re.sub(r"\x1b\[2K", "", line) for line in last_frame.splitlines()]
    assert lines[0].startswith("cirros")
    assert " 50.0%" in lines[0]
    assert "50.0 MiB / 100.0 MiB" in lines[0]
    assert "ETA" in lines[0]
    assert lines[1].startswith("ubuntu")


def test_log_lines_for_pipes() -> None:
    stream = io.StringIO()
    display = LogProgress(stream)
    item = outcome("cirros", 10 << 20, 0)
    display.started(item)
    item.received, item.result = 10 << 20, "cached"
    display.finished(item)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "warming id-cirros (cirros)"
    assert lines[1].startswith("cirros")
    assert "cached" in lines[1]
    assert "\x1b" not in stream.getvalue()
