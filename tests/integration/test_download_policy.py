"""Glance's download decision for every byte, against the real Glance and its policy.

Glance 33's default policy lets a project's `reader` see an image (`get_image`) but not
download it (`download_image` needs `member`); the stack's policy file adds an operator's rule
(images with edge_admin_only='true' are for admins only). edgecache must hand out bytes exactly
when Glance would: cold, from its cache, by Range and for HEAD.
"""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import VISIBILITIES, Image, World, glance_with_token, http
from tests.stack import Token, Visibility, get_token
from tests.stack.edgecache_daemon import EdgecacheDaemon
from tests.stack.openstack import ADMIN_ONLY_PROPERTY

REFUSED = "You are not authorized to complete download_image action"
SIZE = 256 * 1024


def data_url(edgecache: EdgecacheDaemon, image: Image) -> str:
    return f"{edgecache.url}/v2/images/{image.id}/file"


def assert_refused(edgecache: EdgecacheDaemon, image: Image, token: Token) -> None:
    """403 with Glance's message, never a byte: whole, by Range and for HEAD."""
    for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=1000-"}):
        answer = http("GET", data_url(edgecache, image), token, headers=headers)
        assert answer.status == 403, (headers, answer.body[:300])
        assert REFUSED in answer.body.decode(), answer.body[:300]
        assert image.data[:64] not in answer.body
    assert http("HEAD", data_url(edgecache, image), token).status == 403


@pytest.mark.parametrize("visibility", VISIBILITIES)
def test_a_reader_never_gets_the_bytes_a_member_gets(
    world: World, edgecache: EdgecacheDaemon, visibility: Visibility
) -> None:
    stack = world.stack
    image = world.new_image(visibility, size=SIZE)
    reader, member = get_token(world.reader), get_token(world.a)
    direct = http("GET", f"{stack.glance_url}/v2/images/{image.id}/file", reader)
    assert direct.status == 403  # Glance's own answer, as a check of the stack
    assert http("GET", f"{edgecache.url}/v2/images/{image.id}", reader).status == 200

    assert_refused(edgecache, image, reader)  # cold
    cli = glance_with_token(
        stack, reader, "image-download", "--file", os.devnull, image.id,
        image_url=edgecache.url, check=False,
    )  # fmt: skip
    assert cli.returncode == 1
    assert "403" in cli.stderr
    assert stack.count_image_downloads(image.id) == 0  # no fill started for the reader

    answer = http("GET", data_url(edgecache, image), member)
    assert (answer.status, answer.body) == (200, image.data)
    assert stack.count_image_downloads(image.id, at_least=1) == 1
    assert_refused(edgecache, image, reader)  # cached
    assert http("HEAD", data_url(edgecache, image), member).status == 200


def test_an_operators_download_rule_holds_for_cached_bytes(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    member = get_token(world.a)
    data = os.urandom(SIZE)
    record = stack.create_image(
        member, "admin-only", data, properties={ADMIN_ONLY_PROPERTY: "true"}
    )
    image = Image(record, data)
    direct = http("GET", f"{stack.glance_url}/v2/images/{image.id}/file", member)
    assert direct.status == 403
    assert_refused(edgecache, image, member)  # cold: the owner itself may not
    answer = http("GET", data_url(edgecache, image), stack.admin_token())
    assert (answer.status, answer.body) == (200, image.data)
    assert answer.headers["X-Edgecache-Source"] == "fill"
    assert_refused(edgecache, image, member)  # cached
    assert_refused(edgecache, image, get_token(world.a))  # another token of the same user


def test_a_deactivated_image_is_refused_from_the_cache(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    image = world.new_image("private", size=SIZE)
    member = get_token(world.a)
    assert http("GET", data_url(edgecache, image), member).body == image.data
    stack.image_action(image.id, "deactivate")
    try:
        answer = http("GET", data_url(edgecache, image), member)
        assert answer.status == 403
        assert image.data[:64] not in answer.body
        assert http("GET", f"{edgecache.url}/v2/images/{image.id}", member).status == 200
    finally:
        stack.image_action(image.id, "reactivate")
    assert http("GET", data_url(edgecache, image), member).body == image.data
