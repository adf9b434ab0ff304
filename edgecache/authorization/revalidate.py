"""Remembered image records re-checked as the service user: every one when the uplink comes
back, and those of cached images in the background while it is up, so that none is older than
`[offline] record_max_age` (an image deleted, deactivated or hidden at the region stops being
served offline within that bound).

Images deleted upstream are forgotten (record, decisions, cached copy). For the others, an
identity's remembered "allowed" decisions (to see the record and to download the data) are
kept only if its project (learnt from Keystone) can still see the image by Glance's visibility
rules and the image is still active (a deactivated image is not downloadable); revalidation
only ever takes access away, it never grants any. Decisions whose identity's project is
unknown are dropped too: those callers simply ask Glance again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from edgecache.authorization.authority import DOWNLOAD
from edgecache.authorization.decisions import DecisionStore
from edgecache.authorization.keystone import KEYSTONE_ERRORS, Keystone, describe
from edgecache.documents import SHARED_SCOPE, Document, DocumentStore
from edgecache.headers import OWN_USER_AGENT
from edgecache.metrics import Metrics
from edgecache.upstream.client import TRANSIENT_ERRORS, Upstream
from edgecache.upstream.pools import PoolExhausted

log = logging.getLogger(__name__)

_LONGEST_PERIOD = 60.0  # seconds between two background passes over the cached images


def may_still_see(record: dict[str, Any], project: str | None, members: set[str]) -> bool:
    if project is None or record.get("status") in ("deleted", "pending_delete", "killed"):
        return False
    if record.get("visibility") in ("public", "community") or record.get("owner") == project:
        return True
    return record.get("visibility") == "shared" and project in members


class Revalidator:
    def __init__(
        self,
        *,
        upstream: Upstream,
        keystone: Keystone,
        documents: DocumentStore,
        decisions: DecisionStore,
        cached: Callable[[], list[str]],
        evict: Callable[[str], Awaitable[object]],
        metrics: Metrics,
        forget_recent: Callable[[], None],
    ) -> None:
        """`cached`: the images that have a stored copy; `evict`: remove an image's copy."""
        self._upstream = upstream
        self._keystone = keystone
        self._documents = documents
        self._decisions = decisions
        self._cached = cached
        self._evict = evict
        self._metrics = metrics
        self._forget_recent = forget_recent

    async def run(self) -> None:
        """Re-check every remembered image record (the uplink is back)."""
        await self._decisions.purge_expired()
        image_ids = await self._documents.image_ids()
        if await self._revalidate_all(image_ids, "the next time the uplink comes back"):
            log.info("revalidated %d remembered image records", len(image_ids))

    async def refresh_cached(self, older_than: float) -> None:
        """Re-read the records of cached images last had from Glance more than `older_than`
        seconds ago, oldest first, so that what is served offline follows the region."""
        cached = self._cached()
        paths = [_record_path(image_id) for image_id in cached]
        fetched = await self._documents.fetched_at(SHARED_SCOPE, paths)
        due = sorted(
            (fetched.get(path, 0.0), image_id)
            for path, image_id in zip(paths, cached, strict=True)
            if time.time() - fetched.get(path, 0.0) > older_than
        )
        if due and await self._revalidate_all([image_id for _, image_id in due], "shortly"):
            self._metrics.record_refreshes.inc(len(due))
        fetched = await self._documents.fetched_at(
            SHARED_SCOPE, [_record_path(image_id) for image_id in self._cached()]
        )
        oldest = min(fetched.values(), default=None)
        self._metrics.oldest_cached_record_age.set(0 if oldest is None else time.time() - oldest)

    async def keep_fresh(self, max_age: float) -> None:
        """Forever: while the uplink is up, no record of a cached image gets older than
        `max_age` (each is re-read once it is older than `max_age` less two periods)."""
        period = min(_LONGEST_PERIOD, max_age / 10)
        while True:
            if self._upstream.uplink.online:
                await self.refresh_cached(max_age - 2 * period)
            await asyncio.sleep(period)

    async def _revalidate_all(self, image_ids: list[str], again: str) -> bool:
        """Re-check these records as the service user; False if that was cut short."""
        try:
            headers = {"X-Auth-Token": await self._keystone.token(), "User-Agent": OWN_USER_AGENT}
            for image_id in image_ids:
                await self._revalidate(image_id, headers)
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "Re-checking remembered image records with the region was interrupted by the "
                "uplink (%s); it runs again %s.",
                str(exc) or type(exc).__name__,
                again,
            )
            return False
        except PoolExhausted as exc:
            log.warning(
                "Re-checking remembered image records with the region stopped: %s; it runs "
                "again %s.",
                exc,
                again,
            )
            return False
        except KEYSTONE_ERRORS as exc:
            log.warning(
                "Re-checking remembered image records stopped: the service token could not be "
                "had from Keystone (%s); it runs again %s. Check the [keystone] settings.",
                describe(exc),
                again,
            )
            return False
        finally:
            self._forget_recent()
        return True

    async def _revalidate(self, image_id: str, headers: dict[str, str]) -> None:
        path = _record_path(image_id)
        answer = await self._upstream.fetch(path, headers)
        if answer.status == 404:
            log.info("image %s was deleted upstream; forgetting it", image_id)
            await self._documents.forget_image(image_id)
            await self._decisions.forget_image(image_id)
            await self._evict(image_id)
            self._metrics.revalidations.labels("deleted").inc()
            return
        if answer.status != 200:
            return
        record = answer.json()
        content_type = answer.headers.get("Content-Type", "application/json")
        await self._documents.put(
            SHARED_SCOPE, path, Document(200, content_type, answer.body, time.time()), image_id
        )
        members = (
            await self._members(path, headers) if record.get("visibility") == "shared" else set()
        )
        downloadable = record.get("status") == "active"
        for identity, project, is_admin in await self._decisions.allowed(image_id):
            if is_admin:
                self._metrics.revalidations.labels("kept").inc()
            elif not may_still_see(record, project, members):
                await self._decisions.forget(identity, image_id)
                self._metrics.revalidations.labels("revoked").inc()
            elif not downloadable:  # deactivated: the record stays visible, the data does not
                await self._decisions.forget(identity, image_id, DOWNLOAD)
                self._metrics.revalidations.labels("revoked").inc()
            else:
                self._metrics.revalidations.labels("kept").inc()

    async def _members(self, path: str, headers: dict[str, str]) -> set[str]:
        answer = await self._upstream.fetch(f"{path}/members", headers)
        if answer.status != 200:
            return set()
        try:
            return {str(m["member_id"]) for m in json.loads(answer.body).get("members", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            return set()


def _record_path(image_id: str) -> str:
    return f"/v2/images/{image_id}"
