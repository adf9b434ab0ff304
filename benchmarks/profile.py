"""Sampling edgecache with py-spy while chosen scenarios run, and reading the samples back.

py-spy only records samples in which the process is busy, so recording through a whole
scenario captures edgecache's own runs and nothing of the other contenders'.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_ATTACH_SECONDS = 1.0  # py-spy needs a moment to attach before the run it should see


class PySpy:
    def __init__(self, binary: str, pid: int, directory: Path) -> None:
        self.binary = binary
        self.pid = pid
        self.directory = directory
        self.recorded: list[Path] = []

    @contextmanager
    def record(self, name: str) -> Iterator[None]:
        """Record folded stacks (with native frames, per thread) into profile-<name>.folded."""
        self.directory.mkdir(parents=True, exist_ok=True)
        output = self.directory / f"profile-{name}.folded"
        log = self.directory / f"profile-{name}.log"
        with log.open("wb") as messages:
            process = subprocess.Popen(
                [
                    self.binary,
                    "record",
                    "--pid",
                    str(self.pid),
                    "--rate",
                    "100",
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(output),
                ],
                stdin=subprocess.DEVNULL,
                stdout=messages,
                stderr=subprocess.STDOUT,
            )
        time.sleep(_ATTACH_SECONDS)
        try:
            yield
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(120)
            self.recorded.append(output)


def hot_spots(folded: Path, count: int = 14) -> list[tuple[float, str]]:
    """Where most samples were (self time), as (share of samples, "line < calling line").

    A C function (a hash update, a syscall) shows as the Python line that called it; the
    caller is kept so that, say, a queue wait in an executor thread reads as such.
    """
    lines: Counter[str] = Counter()
    for line in folded.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        if len(frames) >= 2:
            lines[" < ".join(reversed(frames[-2:]))] += int(samples)
    total = sum(lines.values()) or 1
    return [(samples / total, where) for where, samples in lines.most_common(count)]
