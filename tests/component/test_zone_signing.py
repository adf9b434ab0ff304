"""The sibling endpoint answers only requests signed with the zone's secret, each once, for
exactly what was signed: a real node's zone listener, and the signature check's memory."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgecache.zone.protocol import ASKER_HEADER, EXPECT_HEADER, image_path
from edgecache.zone.signing import WINDOW, SignatureCheck, sign
from tests.conftest import MiB, SpawnEdgecache, UpstreamServer, random_bytes
from tests.fakeglance import FakeGlance, FakeImage
from tests.zonekit import ZONE_SECRET, NodePorts, download, node_config, raw_request, signed


@dataclass
class StoredImages:
    zone_url: str  # the node's sibling endpoint
    image: FakeImage
    other: FakeImage


@pytest.fixture
async def node(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    spawn_edgecache: SpawnEdgecache,
    tmp_path: Path,
) -> StoredImages:
    """A node (a zone of one) that stores two images."""
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2)]
    ports = NodePorts()
    config = tmp_path / "node.toml"
    config.write_text(node_config(ports, [ports.zone_url]))
    _, url = await spawn_edgecache(
        upstream_server.url, tmp_path / "node", "--config", str(config), port=ports.client
    )
    for image in images:
        assert await download(url, image, token) == image.data
    return StoredImages(ports.zone_url, *images)


JSON = {"Accept": "application/json"}  # refusals in Glance's JSON shape
Sent = tuple[str, dict[str, str]]  # the path and the headers of a request
NODE = "http://127.0.0.1:1"  # the zone URL of the node checking signatures, in unit tests
OTHER_NODE = "http://127.0.0.1:2"  # another zone URL than the node's


def unsigned(node: str, path: str, other: str) -> Sent:
    return path, {ASKER_HEADER: "http://127.0.0.1:1"}


def another_secret(node: str, path: str, other: str) -> Sent:
    return path, signed(node, path, secret="the-secret-of-another-zone")


def a_minute_ago(node: str, path: str, other: str) -> Sent:
    return path, signed(node, path, at=time.time() - 2 * WINDOW)


def a_minute_ahead(node: str, path: str, other: str) -> Sent:
    return path, signed(node, path, at=time.time() + 2 * WINDOW)


def for_another_image(node: str, path: str, other: str) -> Sent:
    return path, signed(node, other)


def for_another_range(node: str, path: str, other: str) -> Sent:
    return path, {**signed(node, path, {"Range": "bytes=0-99"}), "Range": "bytes=100-199"}


def range_added(node: str, path: str, other: str) -> Sent:
    return path, {**signed(node, path), "Range": "bytes=100-"}


def for_head(node: str, path: str, other: str) -> Sent:
    return path, signed(node, path, method="HEAD")


def for_another_version(node: str, path: str, other: str) -> Sent:
    return path, {**signed(node, path, {EXPECT_HEADER: "1:a:b"}), EXPECT_HEADER: "2:a:b"}


def by_another_node(node: str, path: str, other: str) -> Sent:
    return path, {**signed(node, path), ASKER_HEADER: "http://127.0.0.1:2"}


def for_another_node(node: str, path: str, other: str) -> Sent:
    return path, signed(OTHER_NODE, path)


def with_a_query(node: str, path: str, other: str) -> Sent:
    return f"{path}?x=1", signed(node, path)


NOT_SIGNED, NOT_NOW, NOT_VALID = "Only requests signed", "seconds away", "not valid for it"


@pytest.mark.parametrize(
    ("tampered", "says"),
    [
        (unsigned, NOT_SIGNED),
        (another_secret, NOT_VALID),
        (a_minute_ago, NOT_NOW),
        (a_minute_ahead, NOT_NOW),
        (for_another_image, NOT_VALID),
        (for_another_range, NOT_VALID),
        (range_added, NOT_VALID),
        (for_head, NOT_VALID),
        (for_another_version, NOT_VALID),
        (by_another_node, NOT_VALID),
        (for_another_node, NOT_VALID),
        (with_a_query, NOT_VALID),
    ],
)
async def test_a_request_not_signed_for_exactly_what_it_asks_is_refused(
    node: StoredImages, tampered: Callable[[str, str, str], Sent], says: str
) -> None:
    path, other = image_path(node.image.id), image_path(node.other.id)
    ranged = {"Range": "bytes=100-199"}
    assert await raw_request(node.zone_url, path, signed(node.zone_url, path)) == (
        200,
        node.image.data,
    )
    assert await raw_request(node.zone_url, path, signed(node.zone_url, path, ranged)) == (
        206,
        node.image.data[100:200],
    )

    target, headers = tampered(node.zone_url, path, other)
    status, body = await raw_request(node.zone_url, target, {**headers, **JSON})
    assert status == 403
    refusal = json.loads(body)  # Glance's shape, no image bytes
    assert refusal["code"] == "403 Forbidden"
    assert says in refusal["message"]


async def test_a_signed_request_is_answered_once(node: StoredImages) -> None:
    path = image_path(node.image.id)
    headers = signed(node.zone_url, path)
    assert await raw_request(node.zone_url, path, headers) == (200, node.image.data)
    status, body = await raw_request(node.zone_url, path, {**headers, **JSON})
    assert status == 403
    assert "answered already" in json.loads(body)["message"]


def test_accepted_signatures_are_forgotten_once_their_time_is_out_of_the_window() -> None:
    now = [1_000_000.0]
    check = SignatureCheck(ZONE_SECRET, NODE, capacity=2, clock=lambda: now[0])
    path = image_path("an-image")
    first, second, third = (signed(NODE, path, at=now[0]) for _ in range(3))
    assert check.refusal("GET", path, first) is None
    assert check.refusal("GET", path, first) is not None  # a replay
    assert check.refusal("GET", path, second) is None
    refused = check.refusal("GET", path, third)  # no room to remember it: not answered
    assert refused is not None
    assert refused.status == 503

    now[0] += WINDOW + 1  # the first two are out of the window: forgotten, and refused by time
    assert check.refusal("GET", path, first) is not None
    later = signed(NODE, path, at=now[0])
    assert check.refusal("GET", path, later) is None


def test_requests_without_the_secret_are_not_remembered() -> None:
    check = SignatureCheck(ZONE_SECRET, NODE, capacity=1)
    path = image_path("an-image")
    for _ in range(10):
        guess = {
            ASKER_HEADER: "x",
            **sign("not-the-zone-secret", "GET", NODE + path, {ASKER_HEADER: "x"}),
        }
        assert check.refusal("GET", path, guess) is not None
    assert check.refusal("GET", path, signed(NODE, path)) is None  # its one place was still free
