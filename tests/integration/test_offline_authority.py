"""Glance's authority holds while the uplink is down, against the real Keystone + Glance
(issue 19): an image deactivated at the region stops being served offline once its record is
re-read; a refusal Glance gives one caller (a member list of an image that is not shared)
takes nothing from the others; a token Glance never authenticated is no accepted token.

One edgecache with `[keystone]` and a short `[offline] record_max_age`; everything is set up
online, then Glance is killed once and each finding is checked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import Image, World, http, running
from tests.stack import get_token
from tests.stack.edgecache_daemon import QUICK_SETTINGS, EdgecacheDaemon

RECORD_MAX_AGE = 3  # seconds: the background re-reads run every 0.3 s
REFRESHES = "edgecache_record_refreshes_total"


@dataclass
class Scene:
    edgecache: EdgecacheDaemon
    booted: Image  # public, downloaded by A; C asked for its member list (Glance: 403)
    deactivated: Image  # public, downloaded by A, then deactivated at the region
    tokens: dict[str, str]


@pytest.fixture(scope="module")
def scene(world: World, integ_dir: Path) -> Iterator[Scene]:
    stack = world.stack
    daemon = EdgecacheDaemon(
        integ_dir / "offline-authority",
        stack.glance_url,
        keystone=stack.glance_service,
        settings={**QUICK_SETTINGS, "offline": {"record_max_age": RECORD_MAX_AGE}},
    )
    for edgecache in running(daemon):
        booted, deactivated = world.new_image("public"), world.new_image("public")
        tokens = {
            "a": get_token(world.a).value,
            "c": get_token(world.c).value,
            "versions-only": "gAAAAABsent-only-to-versions",
        }
        for image in (booted, deactivated):
            got = http("GET", f"{edgecache.url}/v2/images/{image.id}/file", tokens["a"])
            assert got.status == 200
            assert got.body == image.data
        # C is known to the edge (Glance answered it a list), but never asked about these.
        assert http("GET", f"{edgecache.url}/v2/images?limit=1", tokens["c"]).status == 200
        members = http("GET", f"{edgecache.url}/v2/images/{booted.id}/members", tokens["c"])
        assert members.status == 403  # Glance: only shared images have members
        assert http("GET", f"{edgecache.url}/versions", tokens["versions-only"]).status == 200
        stack.image_action(deactivated.id, "deactivate")
        _wait_for_refreshes(edgecache, count=2)  # both cached records re-read since
        stack.stop_glance(kill=True)
        try:
            http("GET", f"{edgecache.url}/versions", timeout=30)  # tells it the uplink is gone
            edgecache.wait_uplink("down", timeout=30)
            yield Scene(edgecache, booted, deactivated, tokens)
        finally:
            stack.start_glance()
            stack.image_action(deactivated.id, "reactivate")


def _wait_for_refreshes(edgecache: EdgecacheDaemon, count: int, timeout: float = 30) -> None:
    start = edgecache.metrics().get(REFRESHES, 0.0)
    deadline = time.monotonic() + timeout
    while edgecache.metrics().get(REFRESHES, 0.0) < start + count:
        assert time.monotonic() < deadline, "the records of cached images were not re-read"
        time.sleep(0.1)


def test_a_deactivated_image_is_not_served_offline_once_its_record_is_re_read(
    scene: Scene,
) -> None:
    url = f"{scene.edgecache.url}/v2/images/{scene.deactivated.id}/file"
    for who in ("c", "a"):
        got = http("GET", url, scene.tokens[who], timeout=30)
        assert got.status != 200, who
        assert scene.deactivated.data[:4096] not in got.body, who


def test_a_member_list_refused_to_one_caller_takes_nothing_from_another(scene: Scene) -> None:
    base = f"{scene.edgecache.url}/v2/images/{scene.booted.id}"
    record = http("GET", base, scene.tokens["a"], timeout=30)
    assert record.status == 200
    assert record.headers["X-Edgecache-Uplink"] == "down"
    data = http("GET", f"{base}/file", scene.tokens["a"], timeout=30)
    assert data.status == 200
    assert data.body == scene.booted.data


def test_a_string_sent_to_versions_is_no_accepted_token(scene: Scene) -> None:
    """Keystone (still reachable) says the string is no token: 401, not the image."""
    got = http(
        "GET", f"{scene.edgecache.url}/v2/images/{scene.booted.id}", scene.tokens["versions-only"]
    )
    assert got.status == 401
