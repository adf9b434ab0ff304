"""Error bodies exactly as Glance (through webob) writes them, in the format the caller accepts.

webob offers text/html then application/json and picks the one the Accept header prefers:
with `*/*` that is HTML, and only a caller that asks for JSON gets JSON (python-glanceclient
sends `*/*` and parses the HTML; keystoneauth clients ask for JSON). A caller that sends no
Accept header, or accepts neither, gets plain text (seen from Glance 33).

The HTML page escapes the text as webob does (an apostrophe becomes `&#x27;`, which a client
that strips the tags shows as it is), so edgecache's own messages use none; JSON and plain
text carry the text unescaped.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus

_OFFERS = ("text/html", "application/json")
UNAUTHORIZED = "The request you have made requires authentication."
_TAG = re.compile(r"<[^>]*>")


@dataclass(frozen=True)
class GlanceError:
    status: int
    explanation: str
    detail: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def status_line(self) -> str:
        return f"{self.status} {HTTPStatus(self.status).phrase}"

    def _body(self, escape: bool) -> str:
        quote = html.escape if escape else str
        return f"{quote(self.explanation)}<br /><br />\n{quote(self.detail)}\n\n"

    def render(self, accept: str | None) -> tuple[str, bytes]:
        """(content type, body) for a caller that sent this Accept header."""
        chosen = preferred_offer(accept)
        if chosen == "text/html":
            page = (
                f"<html>\n <head>\n  <title>{self.status_line}</title>\n </head>\n <body>\n"
                f"  <h1>{self.status_line}</h1>\n  {self._body(escape=True)}\n </body>\n</html>"
            )
            return "text/html", page.encode()
        if chosen == "application/json":
            document = {
                "message": self._body(escape=False),
                "code": self.status_line,
                "title": HTTPStatus(self.status).phrase,
            }
            return "application/json", json.dumps(document).encode()
        plain = _TAG.sub("", self._body(escape=False))
        return "text/plain", f"{self.status_line}\n\n{plain}".encode()


def preferred_offer(accept: str | None) -> str | None:
    """The first of webob's offers with the highest quality the Accept header gives it."""
    if accept is None or not accept.strip():
        return None
    ranges = [_media_range(part) for part in accept.split(",") if part.strip()]
    best, best_quality = None, 0.0
    for offer in _OFFERS:
        quality = _quality(offer, ranges)
        if quality > best_quality:
            best, best_quality = offer, quality
    return best


def _media_range(part: str) -> tuple[str, float]:
    media, *params = (piece.strip() for piece in part.split(";"))
    quality = 1.0
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                quality = max(0.0, min(1.0, float(value)))
            except ValueError:
                quality = 0.0
    return media.lower(), quality


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """The quality of the most specific range that matches `offer` (RFC 9110 12.5.1)."""
    kind = offer.split("/")[0]
    for pattern in (offer, f"{kind}/*", "*/*"):
        for media, quality in ranges:
            if media == pattern:
                return quality
    return 0.0
