"""A far-edge cloudlet whose upstream is the edge site's edgecache, in front of real Glance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import World, downloads_settle, glance_as
from tests.stack.edgecache_daemon import EdgecacheDaemon


@pytest.fixture
def cloudlet(edgecache: EdgecacheDaemon, tmp_path: Path) -> Iterator[EdgecacheDaemon]:
    daemon = EdgecacheDaemon(tmp_path / "cloudlet", edgecache.url)
    with daemon:
        yield daemon


def test_glance_cli_through_cloudlet_and_edge_costs_one_glance_get(
    world: World, edgecache: EdgecacheDaemon, cloudlet: EdgecacheDaemon, tmp_path: Path
) -> None:
    image = world.new_image("private")
    for attempt in (1, 2):
        out = tmp_path / f"{attempt}.img"
        glance_as(
            world.stack, world.a, "image-download", "--file", str(out), image.id,
            image_url=cloudlet.url,
        )  # fmt: skip
        assert out.read_bytes() == image.data
    assert downloads_settle(world.stack, image.id, 1) == 1
    assert cloudlet.metrics()['edgecache_data_requests_total{result="hit"}'] == 1
    assert edgecache.metrics()["edgecache_fills_started_total"] >= 1
    outsider = glance_as(
        world.stack, world.c, "image-download", "--file", str(tmp_path / "no"), image.id,
        image_url=cloudlet.url, check=False,
    )  # fmt: skip
    assert outsider.returncode != 0
    assert "404" in outsider.stderr
