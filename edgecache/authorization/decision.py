"""The download decision: may this caller have this image's bytes? One question, one answer.

Glance makes two decisions about a caller and an image, and both must say yes: may it see the
record (`get_image`) and may it download the data (`download_image`, with every download rule
of Glance's policy, deactivation and the image's status). Both are asked of Glance at the same
moment with the caller's credentials (the record GET and a one-byte GET of the data); while
Glance cannot be asked, what it decided before for the caller's identity is used
(edgecache.authorization.offline). The result is the image's record, or the refusal to send,
before any byte.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from edgecache.answer import Answer
from edgecache.authorization.authority import DOWNLOAD, Authority
from edgecache.authorization.identity import Caller
from edgecache.authorization.offline import OfflineAnswers
from edgecache.authorization.recall import Recall
from edgecache.database.connection import best_effort
from edgecache.headers import forwardable
from edgecache.images import ImageRecord
from edgecache.refusals import Unauthorized, not_a_record
from edgecache.upstream.client import TRANSIENT_ERRORS, UNAVAILABLE_STATUSES

# A one-byte GET of an image's data runs every check of a whole download in Glance (policy
# `download_image` with the image as its target, deactivation, the image's status) and costs
# Glance one small read; answers that mean the checks passed:
_DOWNLOAD_ALLOWED = frozenset({200, 206, 204, 416})  # 204: no data yet; 416: an empty image
_DOWNLOAD_CHECK = {"Range": "bytes=0-0"}


@dataclass(frozen=True)
class Allowed:
    """Glance lets the caller have the bytes of this image (or did, while it is down)."""

    image: ImageRecord


@dataclass(frozen=True)
class Refused:
    """Glance's refusal (or edgecache's, in Glance's words), to send instead of any byte."""

    answer: Answer


Decision = Allowed | Refused


class DownloadDecisions:
    def __init__(
        self,
        *,
        recall: Recall,
        authority: Authority,
        offline: OfflineAnswers,
        unauthorized: Unauthorized,
        reuse_decisions_for: float = 0.0,
    ) -> None:
        self._recall = recall
        self._authority = authority
        self._offline = offline
        self._unauthorized = unauthorized
        self._reuse_for = reuse_decisions_for

    async def decide(self, caller: Caller, image_id: str) -> Decision:
        """Whether `caller` may have the bytes of image `image_id`: the record GET and the
        download check are asked at once, so the check adds no round trip."""
        record, download = await asyncio.gather(
            self._recall.get(f"/v2/images/{image_id}", caller, image_id=image_id),
            self._glance_download_decision(caller, image_id),
        )
        if record.status != 200:
            return Refused(record)
        try:
            image = record.image()
        except ValueError:
            return Refused(not_a_record())
        if not image.has_data:
            # Nothing to cache or check against (Glance answers `queued` with 204, and its
            # one-byte check with 500): the request goes to Glance as it is, and Glance decides.
            return Allowed(image)
        return Allowed(image) if download.status == 200 else Refused(download)

    async def _glance_download_decision(self, caller: Caller, image_id: str) -> Answer:
        """Glance's `download_image` decision for this caller and image: 200 with no body if
        Glance would hand over the bytes, else Glance's refusal as it was (status and message).

        Asked of Glance itself, with the caller's credentials, as a one-byte GET of the data;
        remembered per identity for when the uplink is down.
        """
        if self._reuse_for and (
            self._authority.just_decided(caller, image_id, self._reuse_for, DOWNLOAD) == 200
        ):
            return Answer(200, b"")
        try:
            fresh = await self._recall.fetch_once(
                f"/v2/images/{image_id}/file", caller.headers | _DOWNLOAD_CHECK
            )
        except TRANSIENT_ERRORS:
            return await self._offline.download(caller, image_id)
        if fresh.status in UNAVAILABLE_STATUSES:
            recalled = await self._offline.download(caller, image_id)
            if recalled.status != 503:
                return recalled
        allowed = fresh.status in _DOWNLOAD_ALLOWED
        with best_effort("Glance's download decision"):
            await self._authority.observe(
                caller, 200 if allowed else fresh.status, [image_id], DOWNLOAD
            )
        if allowed:
            return Answer(200, b"")
        if fresh.status == 401:
            self._unauthorized.heard(fresh.headers)
        return Answer(fresh.status, fresh.body, forwardable(fresh.headers))
