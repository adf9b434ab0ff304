"""A WAN's delay for the wan scenario, where the kernel has `tbf` but no `netem`.

`python -m benchmarks.delayline --tun NAME --delay SECONDS`, run inside the router namespace
of benchmarks/wan.py: it opens the TUN device NAME (policy routing sends every packet the
router forwards into it), holds each packet for SECONDS and writes it back, after which the
router forwards it on. Packets keep their order (one delay for all).

The device carries virtio-net headers with TSO enabled (IFF_VNET_HDR, TUNSETOFFLOAD), so a
TCP super-packet of up to 64 KiB crosses it whole, as it crosses a veth: a 200 Mbit/s link is
a few thousand packets a second here, not twenty thousand. Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import selectors
import signal
import struct
import time
from collections import deque

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
# A super-packet (64 KiB) and its virtio-net header.
LARGEST = 65536 + 64


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(
        fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
    )
    fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    return fd


def run(fd: int, delay: float) -> None:
    held: deque[tuple[float, bytes]] = deque()
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    while not stopping:
        timeout = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
        if selector.select(timeout):
            arrived = time.monotonic() + delay
            while True:
                try:
                    held.append((arrived, os.read(fd, LARGEST)))
                except BlockingIOError:
                    break
        now = time.monotonic()
        while held and held[0][0] <= now:
            try:
                os.write(fd, held.popleft()[1])
            except OSError as exc:  # the kernel dropped it, as a full queue would: TCP resends
                if exc.errno not in (errno.EAGAIN, errno.ENOBUFS, errno.EINVAL):
                    raise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tun", required=True, help="the TUN device to open (created here)")
    parser.add_argument("--delay", type=float, required=True, help="seconds each packet is held")
    parser.add_argument("--ready-file", required=True, help="written once the device exists")
    args = parser.parse_args()
    fd = open_tun(args.tun)
    with open(args.ready_file, "w") as ready:
        ready.write(args.tun)
    run(fd, args.delay)


if __name__ == "__main__":
    main()
