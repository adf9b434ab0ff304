"""What edgecache answers in Glance's place while Glance cannot be asked: what Glance said
before to the caller's identity (edgecache.authorization.authority), and nothing more.

A caller that cannot be placed gets 401 (no token, or one known to be invalid or expired) or
503 (a token that cannot be validated now); an image the identity may not see, Glance's
refusal; a document never had from Glance, 503.
"""

from __future__ import annotations

from multidict import CIMultiDict

from edgecache.answer import Answer
from edgecache.authorization.authority import DOWNLOAD, INVALID_TOKEN, Authority
from edgecache.authorization.identity import Caller
from edgecache.documents import SHARED_SCOPE, DocumentStore, Kept
from edgecache.refusals import (
    Unauthorized,
    download_refused,
    image_refused,
    token_unverifiable,
    uplink_down,
)


class OfflineAnswers:
    def __init__(
        self, *, authority: Authority, documents: DocumentStore, unauthorized: Unauthorized
    ) -> None:
        self._authority = authority
        self._documents = documents
        self._unauthorized = unauthorized

    async def document(
        self, kept: Kept, caller: Caller, image_id: str | None, needs_token: bool
    ) -> Answer:
        """The remembered document, if Glance's decisions let this caller have it."""
        scope = SHARED_SCOPE
        if needs_token:
            who = await self._authority.offline_identity(caller)
            if isinstance(who, int):
                return self._unplaced(who)
            if kept.per_caller:
                scope = who.key
        if image_id is not None:
            decision = await self._authority.offline_decision(caller, image_id)
            if decision != 200:
                return image_refused(decision, image_id)
        document = await self._documents.get(scope, kept.path)
        if document is None:
            return uplink_down(f"the answer to GET {kept.path}")
        headers = CIMultiDict({"Content-Type": document.content_type})
        return Answer(document.status, document.body, headers, age=document.age, uplink_down=True)

    async def download(self, caller: Caller, image_id: str) -> Answer:
        """Glance's remembered download decision for this caller: 200 with no body, else the
        refusal to send."""
        if isinstance(verdict := await self._authority.offline_identity(caller), int):
            return self._unplaced(verdict)
        decision = await self._authority.offline_decision(caller, image_id, DOWNLOAD)
        if decision == 200:
            return Answer(200, b"", age=0, uplink_down=True)
        return download_refused(decision, image_id)

    def _unplaced(self, verdict: int) -> Answer:
        """The answer for a caller that cannot be placed: 401 (no token or an invalid one),
        503 (a token that cannot be validated now)."""
        return self._unauthorized.answer() if verdict == INVALID_TOKEN else token_unverifiable()
