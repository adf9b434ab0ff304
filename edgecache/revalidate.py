"""When the uplink comes back: re-check every remembered image record as the service user.

Images deleted upstream are forgotten (record, decisions, cached copy). For the others, an
identity's remembered "allowed" decisions (to see the record and to download the data) are
kept only if its project (learnt from Keystone) can still see the image by Glance's visibility
rules and the image is still active (a deactivated image is not downloadable); revalidation
only ever takes access away, it never grants any. Decisions whose identity's project is
unknown are dropped too: those callers simply ask Glance again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from edgecache.headers import OWN_USER_AGENT
from edgecache.keystone import Keystone
from edgecache.metrics import Metrics
from edgecache.pools import PoolExhausted
from edgecache.store.documents import SHARED_SCOPE, Document
from edgecache.store.evict import Evictor
from edgecache.store.index import Index
from edgecache.upstream import TRANSIENT_ERRORS, Upstream

log = logging.getLogger(__name__)


def may_still_see(record: dict[str, Any], project: str | None, members: set[str]) -> bool:
    if record.get("status") != "active" or project is None:
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
        index: Index,
        evictor: Evictor,
        metrics: Metrics,
        forget_recent: Callable[[], None],
    ) -> None:
        self._upstream = upstream
        self._keystone = keystone
        self._index = index
        self._evictor = evictor
        self._metrics = metrics
        self._forget_recent = forget_recent

    async def run(self) -> None:
        await self._index.decisions.purge_expired()
        headers = {"X-Auth-Token": await self._keystone.token(), "User-Agent": OWN_USER_AGENT}
        image_ids = await self._index.documents.image_ids()
        try:
            for image_id in image_ids:
                await self._revalidate(image_id, headers)
        except TRANSIENT_ERRORS as exc:
            log.warning(
                "revalidation of remembered image records was interrupted by the uplink (%s); "
                "it runs again the next time the uplink comes back",
                str(exc) or type(exc).__name__,
            )
            return
        except PoolExhausted as exc:
            log.warning(
                "revalidation of remembered image records stopped: %s; it runs again the next "
                "time the uplink comes back",
                exc,
            )
            return
        finally:
            self._forget_recent()
        log.info("revalidated %d remembered image records", len(image_ids))

    async def _revalidate(self, image_id: str, headers: dict[str, str]) -> None:
        path = f"/v2/images/{image_id}"
        answer = await self._upstream.fetch(path, headers)
        if answer.status == 404:
            log.info("image %s was deleted upstream; forgetting it", image_id)
            await self._index.documents.forget_image(image_id)
            await self._index.decisions.forget_image(image_id)
            await self._evictor.remove(image_id)
            self._metrics.revalidations.labels("deleted").inc()
            return
        if answer.status != 200:
            return
        record = answer.json()
        content_type = answer.headers.get("Content-Type", "application/json")
        await self._index.documents.put(
            SHARED_SCOPE, path, Document(200, content_type, answer.body, time.time()), image_id
        )
        members = (
            await self._members(path, headers) if record.get("visibility") == "shared" else set()
        )
        for identity, project, is_admin in await self._index.decisions.allowed(image_id):
            if is_admin or may_still_see(record, project, members):
                self._metrics.revalidations.labels("kept").inc()
            else:
                await self._index.decisions.forget(identity, image_id)
                self._metrics.revalidations.labels("revoked").inc()

    async def _members(self, path: str, headers: dict[str, str]) -> set[str]:
        answer = await self._upstream.fetch(f"{path}/members", headers)
        if answer.status != 200:
            return set()
        try:
            return {str(m["member_id"]) for m in json.loads(answer.body).get("members", [])}
        except (ValueError, KeyError, TypeError, AttributeError):
            return set()
