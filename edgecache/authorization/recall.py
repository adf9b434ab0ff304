"""Glance's metadata answers (records, lists, members, schemas, version documents): asked of
Glance with the caller's credentials and remembered, or, while Glance cannot be asked, what it
said before (edgecache.authorization.offline). Each answer also teaches the authority what
Glance decided about the caller."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping

import xxhash

from edgecache.answer import Answer
from edgecache.authorization.authority import (
    DECISION_STATUSES,
    RECENT_CAPACITY,
    REWRITE_AFTER,
    Authority,
)
from edgecache.authorization.identity import Caller, Identity
from edgecache.authorization.offline import OfflineAnswers
from edgecache.database.connection import best_effort
from edgecache.documents import PER_IDENTITY, SHARED_SCOPE, Document, DocumentStore, Kept
from edgecache.headers import REQUEST_ID, forwardable
from edgecache.lru import LruDict
from edgecache.metrics import Metrics
from edgecache.refusals import Unauthorized
from edgecache.singleflight import SingleFlight
from edgecache.upstream.client import (
    TRANSIENT_ERRORS,
    UNAVAILABLE_STATUSES,
    Upstream,
    UpstreamAnswer,
)

REMEMBERED_STATUSES = frozenset({200, 300})  # 300: Glance's answer to GET /


class Recall:
    def __init__(
        self,
        *,
        upstream: Upstream,
        documents: DocumentStore,
        authority: Authority,
        offline: OfflineAnswers,
        unauthorized: Unauthorized,
        metrics: Metrics,
        reuse_decisions_for: float = 0.0,
    ) -> None:
        self._upstream = upstream
        self._documents = documents
        self._authority = authority
        self._offline = offline
        self._unauthorized = unauthorized
        self._metrics = metrics
        self._reuse_for = reuse_decisions_for
        self._stored: LruDict[tuple[str, str], tuple[int, float]] = LruDict(RECENT_CAPACITY)
        self._asking: SingleFlight[tuple[str, frozenset[tuple[str, str]]], UpstreamAnswer]
        self._asking = SingleFlight()

    def forget_recent(self) -> None:
        """Documents were deleted behind our back (revalidation): store the next ones again."""
        self._stored.clear()

    async def get(
        self,
        path_qs: str,
        caller: Caller,
        *,
        per_caller: bool = False,
        with_query: bool = False,
        image_id: str | None = None,
        needs_token: bool = True,
        decisions: frozenset[int] = DECISION_STATUSES,
    ) -> Answer:
        """Glance's answer to `caller` for `path_qs`, or the remembered one if it is down.

        `per_caller`: the answer depends on who asks (lists, member lists) and is remembered
        for the caller's identity (at most PER_IDENTITY of them); else it is the same for all
        who may see it. `with_query`: the query selects the answer (a list's filters); else
        Glance ignores it and the answer is remembered per path, so that a query cannot grow
        what is remembered. `image_id` names the image whose access decides whether a
        remembered answer may be given to this caller, and `decisions` the statuses of
        Glance's answer that are its decision on whether the caller may see that image.
        `needs_token=False` for the documents Glance serves without authentication (its
        version documents): their answers say nothing about the caller's token.
        """
        kept = Kept(path_qs if with_query else path_qs.split("?", 1)[0], per_caller)
        if image_id is not None and (reused := await self._reuse(kept, caller, image_id)):
            return reused
        try:
            fresh = await self.fetch_once(path_qs, caller.headers)
        except TRANSIENT_ERRORS:
            return self._counted(await self._offline.document(kept, caller, image_id, needs_token))
        if fresh.status in UNAVAILABLE_STATUSES:
            recalled = await self._offline.document(kept, caller, image_id, needs_token)
            if recalled.status != 503:
                return self._counted(recalled)
        if fresh.status == 401:
            self._unauthorized.heard(fresh.headers)
        with best_effort("Glance's answer"):
            who = (
                await self._learn_access(caller, image_id, fresh.status, decisions)
                if needs_token
                else None
            )
            scope = who.key if per_caller and who is not None else SHARED_SCOPE
            if scope != SHARED_SCOPE or not per_caller:
                await self._learn(kept.path, caller, scope, image_id, fresh)
        self._metrics.metadata_requests.labels("upstream").inc()
        return Answer(fresh.status, fresh.body, forwardable(fresh.headers))

    async def fetch_once(self, path_qs: str, headers: Mapping[str, str]) -> UpstreamAnswer:
        """Glance's answer, asked once for identical requests in flight at the same moment.

        The same caller (the same credentials) asking for the same document at the same time
        gets the same answer from Glance; a boot storm's metadata GETs make one round trip.
        """
        same = frozenset((k, v) for k, v in headers.items() if k != REQUEST_ID)
        return await self._asking.run(
            (path_qs, same), lambda: self._upstream.fetch(path_qs, headers)
        )

    async def refresh(self, path_qs: str, caller: Caller) -> None:
        """Ask Glance for a shared document now and remember its answer (nobody is waiting
        for it: nothing is recalled, and it is not counted as an answer)."""
        fresh = await self.fetch_once(path_qs, caller.headers)
        if fresh.status not in UNAVAILABLE_STATUSES:
            with best_effort("Glance's answer"):
                await self._learn(path_qs, caller, SHARED_SCOPE, None, fresh)

    async def _reuse(self, kept: Kept, caller: Caller, image_id: str) -> Answer | None:
        """The remembered answer, if Glance allowed this caller this image very lately."""
        if (
            not self._reuse_for
            or self._authority.just_decided(caller, image_id, self._reuse_for) != 200
        ):
            return None
        who = self._authority.recent_identity(caller)
        if who is None:
            return None
        document = await self._documents.get(
            who.key if kept.per_caller else SHARED_SCOPE, kept.path
        )
        if document is None:
            return None
        self._metrics.metadata_requests.labels("cache").inc()
        headers = {"Content-Type": document.content_type}
        return Answer(document.status, document.body, headers, age=document.age)

    def _counted(self, answer: Answer) -> Answer:
        self._metrics.metadata_requests.labels("cache" if answer.recalled else "refused").inc()
        return answer

    async def _learn_access(
        self, caller: Caller, image_id: str | None, status: int, decisions: frozenset[int]
    ) -> Identity | None:
        """What Glance's answer to an authenticated request says of the caller's access;
        who the caller is, if Glance accepted it."""
        who = await self._authority.observe(
            caller, status, [image_id] if image_id else [], decisions=decisions
        )
        if image_id is not None and status == 404 and who is not None:
            await self._forget_if_gone(image_id, who)
        return who

    async def _learn(
        self,
        path_qs: str,
        caller: Caller,
        scope: str,
        image_id: str | None,
        fresh: UpstreamAnswer,
    ) -> None:
        """Remember the document Glance answered (and the records a list carries)."""
        if fresh.status not in REMEMBERED_STATUSES:
            return
        content_type = fresh.headers.get("Content-Type", "application/json")
        await self._store(scope, path_qs, fresh.status, content_type, fresh.body, image_id)
        if path_qs.split("?")[0] == "/v2/images":
            await self._learn_list(caller, content_type, fresh.body)

    async def _store(
        self,
        scope: str,
        path: str,
        status: int,
        content_type: str,
        body: bytes,
        image_id: str | None,
    ) -> None:
        """Remember a document; the same one again is only rewritten (for its Age) now and
        then, so repeated requests cost no database write."""
        digest, now = xxhash.xxh3_64_intdigest(body), time.monotonic()
        stored = self._stored.get((scope, path))
        if stored is not None and stored[0] == digest and now - stored[1] < REWRITE_AFTER:
            return
        document = Document(status, content_type, body, time.time())
        self._stored[(scope, path)] = (digest, now)  # before the write: a burst writes once
        try:
            await self._documents.put(scope, path, document, image_id)
            if scope != SHARED_SCOPE:
                await self._documents.keep_newest(scope, PER_IDENTITY)
        except BaseException:
            self._stored.pop((scope, path), None)
            raise

    async def _forget_if_gone(self, image_id: str, who: Identity) -> None:
        """A 404 to the image's owner or to an admin says the image itself is gone: forget
        what is remembered of it, for everyone. A 403 or 404 to anyone else is about that
        caller alone (Glance's policy may hide even a public image from some roles), and was
        remembered for that caller only."""
        path = f"/v2/images/{image_id}"
        record = await self._documents.get(SHARED_SCOPE, path)
        if record is None or not (who.is_admin or _owned_by(record.body, who.project_id)):
            return
        await self._documents.forget_image(image_id)
        await self._authority.forget_image(image_id)
        self._stored.pop((SHARED_SCOPE, path), None)

    async def _learn_list(self, caller: Caller, content_type: str, body: bytes) -> None:
        """A list shows which images the caller may see, and carries their records."""
        try:
            records = [r for r in json.loads(body).get("images", []) if isinstance(r, dict)]
        except (ValueError, AttributeError):
            return
        image_ids = [str(record["id"]) for record in records if "id" in record]
        await self._authority.observe(caller, 200, image_ids)
        for record in records:
            if "id" in record:
                image_id = str(record["id"])
                body = json.dumps(record).encode()
                await self._store(
                    SHARED_SCOPE, f"/v2/images/{image_id}", 200, content_type, body, image_id
                )


def _owned_by(record_body: bytes, project_id: str | None) -> bool:
    try:
        owner = json.loads(record_body).get("owner")
    except (ValueError, AttributeError):
        return False
    return project_id is not None and owner == project_id
