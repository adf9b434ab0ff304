"""Signed sibling requests: an HMAC-SHA256 under the zone's secret, which never crosses the wire.

The signature covers everything that decides which bytes a sibling sends (the method, the
URL: which node and path, the asking node, Range and the expected version of the image), a time
and a nonce (two look-ups alike within a second are two requests, not a replay). A request is
answered only if its signature is right, its time is within WINDOW seconds of this node's
clock, and the same signature was not accepted before: a captured request can be neither
replayed, nor sent to another node, nor turned into one for other bytes. Accepted signatures
are remembered until their time leaves the window (after that the time alone refuses them), at
most MAX_REMEMBERED of them; only requests signed with the secret are remembered, so nothing
without it can fill that memory.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from edgecache.zone.protocol import (
    ASKER_HEADER,
    EXPECT_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIME_HEADER,
)

WINDOW = 30.0  # seconds either side of this node's clock
# Well above what a zone's nodes ask each other in twice the window (a few requests per fill),
# and a few MiB at most.
MAX_REMEMBERED = 50_000
_TIME = re.compile(r"[0-9]{1,12}")
_NONCE = re.compile(r"[0-9a-f]{16,64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


def sign(
    secret: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    at: float | None = None,
) -> dict[str, str]:
    """The headers that sign a request for `url` (the sibling's URL in [zone] peers, and the
    path); `headers` are the request's own (asker, Range, expect). `at` (default: now) is for
    tests of other times."""
    signed_at = str(int(time.time() if at is None else at))
    nonce = secrets.token_hex(16)
    signature = _signature(secret, method, url, headers, signed_at, nonce)
    return {TIME_HEADER: signed_at, NONCE_HEADER: nonce, SIGNATURE_HEADER: signature}


@dataclass(frozen=True)
class Refused:
    status: int
    explanation: str


NOT_SIGNED = Refused(403, "Only requests signed by a node of this zone are answered here.")
OUT_OF_TIME = Refused(
    403,
    f"The request was signed more than {WINDOW:.0f} seconds away from this node's clock; "
    "the zone's nodes must keep their clocks synchronized (NTP).",
)
WRONG_SIGNATURE = Refused(
    403,
    "The request's zone signature is not valid for it; every node of the zone must have "
    "the same [zone] secret.",
)
REPLAYED = Refused(403, "This signed request was answered already; it is not answered twice.")
TOO_MANY = Refused(
    503,
    f"This node has answered too many sibling requests in the last {2 * WINDOW:.0f} seconds "
    "to remember another one; ask again shortly.",
)


class SignatureCheck:
    """The answering side (`node`: its own URL in [zone] peers): which sibling requests carry
    a valid signature not seen before."""

    def __init__(
        self,
        secret: str,
        node: str,
        *,
        capacity: int = MAX_REMEMBERED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret
        self._node = node
        self._capacity = capacity
        self._clock = clock
        self._accepted: set[str] = set()
        self._forget: list[tuple[float, str]] = []  # heap of (when to forget, signature)

    def refusal(self, method: str, path: str, headers: Mapping[str, str]) -> Refused | None:
        """Why the request for `path` (raw, with its query) is refused, or None: it is
        answered, and remembered."""
        signed_at = headers.get(TIME_HEADER, "")
        nonce = headers.get(NONCE_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not (
            _TIME.fullmatch(signed_at)
            and _NONCE.fullmatch(nonce)
            and _SIGNATURE.fullmatch(signature)
        ):
            return NOT_SIGNED
        now = self._clock()
        if abs(now - int(signed_at)) > WINDOW:
            return OUT_OF_TIME
        expected = _signature(self._secret, method, self._node + path, headers, signed_at, nonce)
        if not hmac.compare_digest(expected, signature):
            return WRONG_SIGNATURE
        self._forget_expired(now)
        if signature in self._accepted:
            return REPLAYED
        if len(self._accepted) >= self._capacity:
            return TOO_MANY
        self._accepted.add(signature)
        heapq.heappush(self._forget, (int(signed_at) + WINDOW, signature))
        return None

    def _forget_expired(self, now: float) -> None:
        while self._forget and self._forget[0][0] < now:
            _, signature = heapq.heappop(self._forget)
            self._accepted.discard(signature)


def _signature(
    secret: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    signed_at: str,
    nonce: str,
) -> str:
    # Header values cannot hold a line feed: one field per line is unambiguous.
    fields = (
        method,
        url,
        headers.get(ASKER_HEADER, ""),
        headers.get("Range", ""),
        headers.get(EXPECT_HEADER, ""),
        signed_at,
        nonce,
    )
    message = "\n".join(fields).encode("utf-8", "surrogateescape")
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
