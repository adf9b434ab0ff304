"""The connections that carry fills are marked low-delay."""

from __future__ import annotations

import socket

from edgecache.upstream.lowdelay import LOW_DELAY, low_delay_socket


def test_sockets_for_fills_carry_the_low_delay_mark() -> None:
    for family, level, option in (
        (socket.AF_INET, socket.IPPROTO_IP, socket.IP_TOS),
        (socket.AF_INET6, socket.IPPROTO_IPV6, socket.IPV6_TCLASS),
    ):
        addr_info = (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", 0))
        with low_delay_socket(addr_info) as sock:
            assert sock.getsockopt(level, option) == LOW_DELAY
