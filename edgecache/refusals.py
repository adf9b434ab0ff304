"""Every answer edgecache gives itself, worded and shaped as Glance words and shapes its own
(edgecache.glance_errors renders them per the caller's Accept header)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from edgecache.answer import Answer
from edgecache.glance_errors import UNAUTHORIZED, GlanceError
from edgecache.upstream.pools import PoolExhausted

RETRY_AFTER = "30"
DOWNLOAD_REFUSED = "You are not authorized to complete download_image action."
MULTIPLE_RANGES = (
    "Requests with multiple ranges are not supported in Glance. "
    "You may make multiple single-range requests instead."
)
_UNREACHABLE = "The regional image service cannot be reached from this edge site"


def refusal(
    status: int, explanation: str, headers: Mapping[str, str] | None = None, detail: str = ""
) -> Answer:
    """An answer edgecache gives itself, worded and shaped as Glance words and shapes it."""
    all_headers = dict(headers or {})
    if status == 503:
        all_headers["Retry-After"] = RETRY_AFTER
    return Answer(status, b"", all_headers, error=GlanceError(status, explanation, detail))


class Unauthorized:
    """keystonemiddleware's 401, which Glance sends before it looks at anything else, with
    the WWW-Authenticate header Glance's last 401 carried (where clients get a token)."""

    def __init__(self) -> None:
        self._www_authenticate: str | None = None

    def heard(self, headers: Mapping[str, str]) -> None:
        """Glance answered 401: remember where it sends callers."""
        self._www_authenticate = headers.get("WWW-Authenticate", self._www_authenticate)

    def answer(self) -> Answer:
        body = {"error": {"code": 401, "title": "Unauthorized", "message": UNAUTHORIZED}}
        headers = {"Content-Type": "application/json"}
        if self._www_authenticate:
            headers["WWW-Authenticate"] = self._www_authenticate
        return Answer(401, json.dumps(body).encode(), headers)


def token_unverifiable() -> Answer:
    """503 for a token edgecache cannot validate while the region cannot be reached (as
    keystonemiddleware answers when it cannot reach Keystone): not 401, which would tell the
    client that the token is bad."""
    return refusal(
        503,
        f"{_UNREACHABLE}, and this token has not been seen here before, so this site cannot "
        "tell whether it is valid. Try again when the uplink is back.",
    )


def image_refused(status: int, image_id: str) -> Answer:
    """Glance's refusal of an image's record (403/404), or 503 where whether the caller may
    see it cannot be known while Glance cannot be asked."""
    if status == 503:
        return refusal(
            503,
            f"{_UNREACHABLE}, and this site cannot tell now whether you may see image "
            f"{image_id}. Try again when the uplink is back.",
        )
    if status == 403:
        return refusal(403, "You are not authorized to complete this action.")
    return refusal(status, f"No image found with ID {image_id}")


def download_refused(status: int, image_id: str) -> Answer:
    """Glance's refusal of an image's data (403: its download_image policy), or 503 where its
    download decision for the caller is not known here."""
    if status == 403:
        return refusal(403, DOWNLOAD_REFUSED)
    if status == 503:
        return refusal(
            503,
            f"{_UNREACHABLE}, and it has not told this site whether you may download image "
            f"{image_id}. Try again when the uplink is back.",
        )
    return image_refused(status, image_id)


def not_a_record() -> Answer:
    return refusal(502, "The regional image service did not answer with an image record.")


def uplink_down(what: str) -> Answer:
    """503 for `what` (a noun phrase: "the data of image X"), which only Glance can give now."""
    return refusal(
        503,
        f"{what[:1].upper()}{what[1:]} is not in the cache of this edge site, and the regional "
        "image service cannot be reached from here to ask for it. "
        "Try again when the uplink is back.",
    )


def upstream_unreachable(method: str, path: str) -> Answer:
    """503 for a request that only Glance can answer (a write, say) while it cannot be reached."""
    return refusal(
        503,
        f"{_UNREACHABLE}, and only it can answer {method} {path}. "
        "Try again when the uplink is back.",
    )


def upstream_busy(exhausted: PoolExhausted) -> Answer:
    """503 for a request that waited too long for a connection to Glance."""
    return refusal(
        503,
        f"This edge site is too busy to ask the regional image service now: {exhausted}. "
        "Try again in a few seconds.",
    )


def range_not_available(size: int, detail: str = "") -> Answer:
    return refusal(
        416, "The Range requested is not available.", {"Content-Range": f"bytes */{size}"}, detail
    )
