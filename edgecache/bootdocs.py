"""The documents a client reads before it boots anything: kept in the cache ahead of need.

nova's image code, glanceclient and openstacksdk read Glance's version document and the image
schemas before an image's record and data (nova gives up on a boot when the schema cannot be
had). They are fetched when the daemon starts and each time the uplink comes back, so an edge
cut off right after a start (or after only an `edgecache warm`) can still answer them. The
schemas need a token: the service user's, where `[keystone]` gives one; `edgecache warm` reads
them through the daemon with the operator's credentials too.
"""

from __future__ import annotations

import logging

from edgecache.auth import Authority
from edgecache.headers import OWN_USER_AGENT
from edgecache.keystone import KEYSTONE_ERRORS, Keystone, describe
from edgecache.recall import Recall

log = logging.getLogger(__name__)

VERSION_DOCUMENTS = ("/", "/versions")
SCHEMAS = ("/v2/schemas/image", "/v2/schemas/images", "/v2/schemas/member", "/v2/schemas/members")
BOOT_DOCUMENTS = (*VERSION_DOCUMENTS, *SCHEMAS)


class BootDocuments:
    def __init__(self, recall: Recall, authority: Authority, keystone: Keystone | None) -> None:
        self._recall = recall
        self._authority = authority
        self._keystone = keystone

    async def refresh(self) -> None:
        """Ask Glance for each boot document now, so that the cache holds its latest answer."""
        try:
            anonymous = self._authority.caller({"User-Agent": OWN_USER_AGENT})
            for path in VERSION_DOCUMENTS:
                await self._recall.refresh(path, anonymous)
            if self._keystone is None:
                return
            service = self._authority.caller(
                {"X-Auth-Token": await self._keystone.token(), "User-Agent": OWN_USER_AGENT}
            )
            for path in SCHEMAS:
                await self._recall.refresh(path, service)
        except KEYSTONE_ERRORS as exc:
            log.info("boot documents not refreshed now: %s", describe(exc))
