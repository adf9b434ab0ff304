"""Glance stays the authority: through edgecache every caller gets exactly Glance's answer
for every image, also once the image is cached, and never someone else's bytes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.conftest import World, glance_as, http
from tests.stack import get_token
from tests.stack.edgecache_daemon import EdgecacheDaemon

BOGUS_TOKEN = "gAAAAABnot-a-real-token"
# What Glance answers each caller for A's images (and admin's public one).
EXPECTED = {
    "public": {"a": 200, "b": 200, "c": 200, "none": 401, "bogus": 401},
    "private": {"a": 200, "b": 404, "c": 404, "none": 401, "bogus": 401},
    "shared": {"a": 200, "b": 200, "c": 404, "none": 401, "bogus": 401},
    "community": {"a": 200, "b": 200, "c": 200, "none": 401, "bogus": 401},
}


def _tokens(world: World) -> dict[str, str | None]:
    return {
        "a": get_token(world.a).value,
        "b": get_token(world.b).value,
        "c": get_token(world.c).value,
        "none": None,
        "bogus": BOGUS_TOKEN,
    }


def test_every_caller_gets_glances_answer_for_every_cached_image(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    tokens = _tokens(world)
    for visibility, image in world.images.items():
        owner = stack.admin_token().value if visibility == "public" else tokens["a"]
        warm = http("GET", f"{edgecache.url}/v2/images/{image.id}/file", owner, expect={200})
        assert warm.body == image.data
        for who, token in tokens.items():
            for suffix in ("", "/file"):
                path = f"/v2/images/{image.id}{suffix}"
                direct = http("GET", f"{stack.glance_url}{path}", token)
                through = http("GET", f"{edgecache.url}{path}", token)
                where = (visibility, who, suffix or "record")
                assert direct.status == EXPECTED[visibility][who], where
                assert through.status == direct.status, where
                if through.status != 200:
                    assert image.data[:4096] not in through.body, where
                elif suffix:
                    assert through.body == direct.body == image.data, where
                    assert through.headers["Content-MD5"] == direct.headers["Content-MD5"]
                    assert through.headers["X-Edgecache-Source"] == "cache", where
                else:
                    assert json.loads(through.body) == json.loads(direct.body), where


def test_outsider_cli_is_refused_a_cached_private_image(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    stack = world.stack
    image = world.new_image("private")
    owner = get_token(world.a)
    got = http("GET", f"{edgecache.url}/v2/images/{image.id}/file", owner, expect={200})
    assert got.body == image.data
    out = tmp_path / "stolen.img"
    for creds in (world.c, world.b):
        result = glance_as(
            stack, creds, "image-download", "--file", str(out), image.id,
            image_url=edgecache.url, check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert "404 Not Found" in result.stderr, result.stderr
        assert not out.exists()


def test_refusals_come_in_the_format_the_caller_accepts_like_glances(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    """Glance (webob) negotiates its error bodies on Accept: JSON for `application/json`
    (openstacksdk, keystoneauth), HTML for `*/*` (python-glanceclient), plain text without
    Accept (edgecache's upstream client once added its own `*/*`, turning these into HTML)."""
    stack = world.stack
    image = world.images["private"]
    outsider = get_token(world.c).value
    differences = {}
    for accept in ("application/json", "*/*", None):
        for who, token in (("c", outsider), ("none", None), ("bogus", BOGUS_TOKEN)):
            path = f"/v2/images/{image.id}/file"
            headers = {"Accept": accept}
            direct = http("GET", f"{stack.glance_url}{path}", token, headers=headers)
            through = http("GET", f"{edgecache.url}{path}", token, headers=headers)
            assert through.status == direct.status
            glance_type = direct.headers["Content-Type"].split(";")[0]
            edge_type = through.headers["Content-Type"].split(";")[0]
            if edge_type != glance_type:
                differences[(accept, who, through.status)] = f"{edge_type}, Glance: {glance_type}"
    assert not differences, differences
