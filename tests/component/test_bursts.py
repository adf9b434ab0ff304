"""A boot storm: many callers asking for the same thing at the same moment cost Glance once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import pytest

from edgecache.answer import Answer
from edgecache.appkeys import AUTHORITY, RECALL, UPSTREAM
from edgecache.upstream.client import UpstreamAnswer
from tests.conftest import EdgecacheFactory, random_bytes
from tests.fakeglance import FakeGlance


async def test_identical_record_requests_in_flight_share_one_glance_request(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    edgecache = await make_edgecache()
    app = edgecache.server.app
    owner, other = glance.add_project("p1"), glance.add_project("p2")
    image = glance.add_image(random_bytes(1024), owner="p1")
    upstream = app[UPSTREAM]
    real_fetch = upstream.fetch
    asked_with: list[str] = []
    entered, release = asyncio.Event(), asyncio.Event()

    async def held_fetch(path_qs: str, headers: Mapping[str, str]) -> UpstreamAnswer:
        asked_with.append(headers["X-Auth-Token"])
        entered.set()
        await release.wait()
        return await real_fetch(path_qs, headers)

    monkeypatch.setattr(upstream, "fetch", held_fetch)

    def ask(token: str, request_id: str) -> asyncio.Task[Answer]:
        caller = app[AUTHORITY].caller(
            {"X-Auth-Token": token, "X-Openstack-Request-Id": request_id}
        )
        path = f"/v2/images/{image.id}"
        return asyncio.create_task(app[RECALL].get(path, caller, image_id=image.id))

    burst = [ask(owner, f"req-{n}") for n in range(8)]
    stranger = ask(other, "req-other")
    await entered.wait()  # every task has been scheduled, and has asked or is waiting
    release.set()
    answers = await asyncio.gather(*burst)
    assert {answer.status for answer in answers} == {200}
    assert (await stranger).status == 404  # another caller: asked on its own, answered apart
    assert sorted(asked_with) == sorted([owner, other])
    assert glance.metadata_requests[image.id] == 1
