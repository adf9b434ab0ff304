"""Who may use the cache management API: Glance's own cache policies, asked per action.

Each action is asked of the regional Glance with the caller's token, as the request of Glance's
cache API that its policy guards (see `CacheQuestion`). What Glance answers means:

- the question's `allowed` statuses: its policy let the caller through;
- 403: its policy refused the caller;
- 404: Glance has no cache management API (its image cache is off, or it is older): it cannot
  say, so only a caller whose token Keystone says carries the `admin` role (`[keystone]`) is
  allowed, as Glance's default rule would; without `[keystone]` nobody is;
- 401: the token is not good (keystonemiddleware's 401 is sent back).

Each action's decision is remembered per identity, under a pseudo image id per policy, and
used while Glance cannot be reached (or fails to answer); an action Glance never decided for
the identity is then answered 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from edgecache.answer import Answer
from edgecache.api.answers import to_response
from edgecache.appkeys import AUTHORITY, UNAUTHORIZED, UPSTREAM
from edgecache.authorization.authority import Authority
from edgecache.authorization.identity import Caller
from edgecache.database.connection import best_effort
from edgecache.refusals import refusal
from edgecache.upstream.client import TRANSIENT_ERRORS, Upstream

CACHE_API = "cache-api"  # the prefix of the pseudo image ids decisions are remembered under
CLEAR_TARGET = "x-image-cache-clear-target"
# Glance checks `cache_delete`, then refuses this value with 400 before it deletes anything.
_NOT_A_CLEAR_TARGET = "none-edgecache-asks-the-policy-only"


@dataclass(frozen=True)
class CacheQuestion:
    """One request of Glance's cache API whose answer says what a cache policy decided."""

    policy: str  # Glance's policy name
    method: str
    path: str  # "{image_id}" is replaced by the image the action is about
    allowed: frozenset[int]  # Glance's answers once its policy let the caller through
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def remembered_as(self) -> str:
        return f"{CACHE_API}:{self.policy}"


# GET /v2/cache: `cache_list`, then 404 if Glance has no cache.
LIST = CacheQuestion("cache_list", "GET", "/v2/cache", frozenset({200}))
# PUT /v2/cache/{id}: `cache_image` with the image as target, 404 if Glance has no cache, 400
# for an image that is not active, else Glance queues the image in its own cache too.
QUEUE = CacheQuestion("cache_image", "PUT", "/v2/cache/{image_id}", frozenset({202, 400}))
# DELETE /v2/cache with a target Glance does not know: `cache_delete`, 404 if Glance has no
# cache, then 400 for the header. No side effect at the region, and no image as policy target.
DELETE = CacheQuestion(
    "cache_delete",
    "DELETE",
    "/v2/cache",
    frozenset({400}),
    {CLEAR_TARGET: _NOT_A_CLEAR_TARGET},
)


async def refusal_for(
    request: web.Request, question: CacheQuestion, image_id: str = ""
) -> web.Response | None:
    """None if Glance lets the caller take this action, else the refusal to send."""
    refusal_answer = await _decide(request, question, image_id)
    return None if refusal_answer is None else to_response(request, refusal_answer)


async def _decide(request: web.Request, question: CacheQuestion, image_id: str) -> Answer | None:
    authority = request.app[AUTHORITY]
    caller = authority.caller(request.headers)
    try:
        status = await _ask(request.app[UPSTREAM], question, caller, image_id)
    except TRANSIENT_ERRORS:
        status = None
    if status is None or status >= 500:
        return await _remembered(request, question, caller)
    if status == 401:
        with best_effort("Glance's refusal of a token"):
            await authority.observe(caller, 401, [])
        return request.app[UNAUTHORIZED].answer()
    answer = await _meaning(authority, question, caller, status)
    with best_effort("Glance's cache policy decision"):
        await authority.observe(caller, 200 if answer is None else 403, [question.remembered_as])
    return answer


async def _meaning(
    authority: Authority, question: CacheQuestion, caller: Caller, status: int
) -> Answer | None:
    """What Glance's answer (not 401, not a failure) decides: None to allow, or the refusal."""
    if status in question.allowed:
        return None
    if status != 404:
        return _not_authorized(question)
    if "admin" in await authority.accepted_roles(caller):
        return None
    return _no_cache_api(question)


async def _ask(upstream: Upstream, question: CacheQuestion, caller: Caller, image_id: str) -> int:
    path = question.path.format(image_id=image_id)
    # The question's own headers replace the caller's, however the caller spelt them.
    replaced = {name.lower() for name in question.headers}
    headers = {k: v for k, v in caller.headers.items() if k.lower() not in replaced}
    headers.update(question.headers)
    async with upstream.request(question.method, path, headers) as response:
        await response.read()
        return response.status


async def _remembered(
    request: web.Request, question: CacheQuestion, caller: Caller
) -> Answer | None:
    """Glance cannot answer now: its decision for this caller and action, if remembered."""
    decision = await request.app[AUTHORITY].offline_decision(caller, question.remembered_as)
    if decision == 200:
        return None
    if decision == 401:
        return request.app[UNAUTHORIZED].answer()
    if decision == 403:
        return _not_authorized(question)
    return refusal(
        503,
        "The regional image service cannot be reached from this edge site, and it has not "
        f"told this site whether you may complete {question.policy} action. "
        "Try again when the uplink is back.",
    )


def _not_authorized(question: CacheQuestion) -> Answer:
    return refusal(403, f"You are not authorized to complete {question.policy} action.")


def _no_cache_api(question: CacheQuestion) -> Answer:
    return refusal(
        403,
        "The regional image service has no cache management API to decide whether you may "
        f"complete {question.policy} action; without it, only callers that Keystone knows "
        "to have the admin role may manage the image cache of this edge site.",
    )
