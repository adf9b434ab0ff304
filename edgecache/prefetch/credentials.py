"""Whose credentials a prefetch job fetches with. No token is ever stored.

- The caller who queued the image (or queued it again), while this process runs: its headers
  are held in memory only. Glance let it queue the image (`cache_image`, the image as target).
- Otherwise, with `[keystone]` service credentials, the service user: for a job queued before
  a restart (or a kill), or whose caller's token the region no longer accepts (it expired
  while the job waited for the window). Glance already decided that the caller may queue the
  image, and the bytes only go into the cache: every download of them is decided per caller
  again, as for any cached image.
- Otherwise the job waits until someone queues the image again, or a download caches it
  (status and `glance cache-list` still show it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edgecache.authorization.keystone import Keystone
from edgecache.headers import AUTH_TOKEN, OWN_USER_AGENT, USER_AGENT, as_edgecache

CALLER = "the caller who queued it"
SERVICE_USER = "the [keystone] service user"
_RESTARTED = (
    "it was queued before the daemon restarted, and without [keystone] service credentials "
    "only the caller who queued it can fetch it"
)


@dataclass(frozen=True)
class Runner:
    """Who a job fetches as: `who` in words (log lines, status), and the headers to send."""

    who: str
    headers: dict[str, str]


class JobCredentials:
    def __init__(self, keystone: Keystone | None) -> None:
        """`keystone`: the service user's client, with `[keystone]` service credentials."""
        self._keystone = keystone
        self._callers: dict[str, dict[str, str]] = {}  # image id -> the queuing caller's headers
        self._refused: dict[str, str] = {}  # image id -> why the last credentials were refused
        self._service_refused: set[str] = set()

    def hold(self, image_id: str, headers: Mapping[str, str]) -> None:
        """The caller who just queued the image: its credentials, in memory only."""
        self._callers[image_id] = as_edgecache(headers)
        self._refused.pop(image_id, None)
        self._service_refused.discard(image_id)

    def release(self, image_id: str) -> None:
        self._callers.pop(image_id, None)
        self._refused.pop(image_id, None)
        self._service_refused.discard(image_id)

    def refused(self, image_id: str, runner: Runner, status: int) -> None:
        """The region refused `runner` (401, 403 or 404): the next credentials are tried."""
        if runner.who == CALLER:
            self._callers.pop(image_id, None)
        else:
            self._service_refused.add(image_id)
        self._refused[image_id] = f"the region answered HTTP {status} to {runner.who}"

    def waiting_for(self, image_id: str) -> str | None:
        """Why the job cannot start until the image is queued again; None if it can."""
        if image_id in self._callers:
            return None
        if self._keystone is not None and image_id not in self._service_refused:
            return None
        return self._refused.get(image_id, _RESTARTED)

    async def runner(self, image_id: str) -> Runner | None:
        """Who the job fetches as now; None if nobody (see `waiting_for`). With the service
        user, one of Keystone's errors (edgecache.authorization.keystone.KEYSTONE_ERRORS) if
        its token cannot be had."""
        if (headers := self._callers.get(image_id)) is not None:
            return Runner(CALLER, headers)
        if self._keystone is None or image_id in self._service_refused:
            return None
        token = await self._keystone.token()
        return Runner(SERVICE_USER, {AUTH_TOKEN: token, USER_AGENT: OWN_USER_AGENT})
