"""The connection that carries a prefetch's bytes from the region: a bounded receive window,
and marked bulk.

The uplink budget (budget.py) decides when a fill reads its next piece, but TCP goes on
delivering into a connection's receive buffer in the kernel for as long as the buffer has
room, and Linux grows that buffer (autotuning) up to net.ipv4.tcp_rmem's maximum, tens of MiB
on many hosts. A warm's connections that the budget holds back while a boot runs would go on
taking the link until their buffers were full (the wan benchmark saw 6 to 17 MB each). With
its window clamped (TCP_WINDOW_CLAMP), a connection that is not read stops the region's
sender after that much. Its buffer is locked (SO_RCVBUF) at four times the window, for the
kernel's autotuning would lift the clamp as it grows the buffer; not at the window itself: a
buffer that small fills whenever the budget holds the reader back, and the kernel then
shrinks the window to two segments and lets it grow again only slowly (the warm got 60% of
its budget so).

The mark (IPTOS_THROUGHPUT, pfifo_fast's last band) puts a prefetch's ACKs and requests after
everything else wherever a queue honours it; every other upstream connection is low-delay
(lowdelay.py).
"""

from __future__ import annotations

import socket
from typing import Any

BULK = 0x08


def bound_for_prefetch(sock: Any, window: int) -> None:
    """`sock`: a socket, or what an asyncio transport gives as its socket; None is skipped."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2 * window)  # doubled by Linux
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, window)
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, BULK)
        elif sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, BULK)
    except OSError:  # a platform without the options: the connection works the same
        pass
