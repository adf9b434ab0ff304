"""What the kernel knows about a server process: CPU time, resident memory, child processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _TICKS


def machine_busy_seconds() -> float:
    """CPU time all cores spent running processes, or lost to the hypervisor (/proc/stat).

    Interrupt and softirq time is left out: on loopback it is mostly the kernel moving the
    benchmark's own packets, and it is not charged to any process.
    """
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = map(int, line.split()[1:9])
    return (user + nice + system + steal) / _TICKS


class OtherLoad:
    """How many cores processes other than `ours` kept busy since this object was made."""

    def __init__(self, ours: list[int]) -> None:
        self.ours = ours
        self._machine = machine_busy_seconds()
        self._ours = cpu_seconds(ours)
        self._since = time.monotonic()

    def cores(self) -> float:
        elapsed = time.monotonic() - self._since
        machine = machine_busy_seconds() - self._machine
        other = machine - (cpu_seconds(self.ours) - self._ours)
        return max(0.0, other) / elapsed if elapsed > 0 else 0.0


def with_children(pid: int) -> list[int]:
    """`pid` and its direct children (nginx: the master and its workers)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        children.extend(int(child) for child in text.split())
    return [pid, *children]


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the highest resident set size since start or the last `reset_peak_rss`."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0; needs the right to write clear_refs)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


class RssSampler:
    """Samples VmRSS in a thread: a cross-check on VmHWM that needs no special rights."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            if self._stop.wait(self.interval):
                return
