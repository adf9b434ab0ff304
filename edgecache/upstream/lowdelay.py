"""The connections that carry fills, marked low-delay (IP_TOS / IPV6_TCLASS).

A node's link is busiest exactly when a fill needs it: in a boot storm a node sends an image to
many clients while it fills that image from the region or a sibling, or sends it to a sibling
that fills from it. Every client of the filling node waits for that fill, so its bytes (from a
sibling) and its ACKs (to the region or sibling) should not queue behind ordinary client
traffic. Marked low-delay, they go first wherever a queue honours the mark (Linux's pfifo_fast
and prio bands, routers that honour DSCP), and travel as usual elsewhere.
"""

from __future__ import annotations

import socket

from aiohttp import AddrInfoType

# IPTOS_LOWDELAY: the ToS byte pfifo_fast puts in its first band.
LOW_DELAY = 0x10


def low_delay_socket(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's TCPConnector(socket_factory=...): a socket as aiohttp makes it, marked."""
    family, kind, protocol, _, _ = addr_info
    sock = socket.socket(family=family, type=kind, proto=protocol)
    mark_low_delay(sock)
    return sock


def mark_low_delay(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        if sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, LOW_DELAY)
        elif sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, LOW_DELAY)
    except OSError:  # a platform without the option: an unmarked socket works the same
        pass
