"""The real clients (python-glanceclient's CLI, openstacksdk) against edgecache, with real
Keystone tokens, compared byte for byte with what was uploaded and with Glance's own answers."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import (
    VISIBILITIES,
    World,
    downloads_settle,
    glance_as,
    listed_ids,
    sdk_download,
    show,
)
from tests.stack import Credentials, Visibility
from tests.stack.edgecache_daemon import EdgecacheDaemon


def test_second_download_is_a_hit_for_every_visibility(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    """The headline: two `glance image-download`s through edgecache, one data GET on Glance."""
    stack = world.stack
    # Who downloads what: each image by a caller Glance lets see it, not only its owner.
    callers: dict[str, Credentials] = {
        "public": world.c,
        "private": world.a,
        "shared": world.b,
        "community": world.c,
    }
    images = {visibility: world.new_image(visibility) for visibility in VISIBILITIES}
    before = edgecache.metrics()

    for visibility, image in images.items():
        for attempt in (1, 2):
            out = tmp_path / f"{visibility}-{attempt}.img"
            glance_as(
                stack,
                callers[visibility],
                "image-download",
                "--file",
                str(out),
                image.id,
                image_url=edgecache.url,
            )
            assert out.read_bytes() == image.data, (visibility, attempt)

    for visibility, image in images.items():
        assert downloads_settle(stack, image.id, 1) == 1, visibility
    after = edgecache.metrics()
    total = sum(len(image.data) for image in images.values())

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('edgecache_data_requests_total{result="miss"}') == len(images)
    assert delta('edgecache_data_requests_total{result="hit"}') == len(images)
    assert delta("edgecache_fetched_bytes_total") == total
    assert delta('edgecache_served_bytes_total{source="fill"}') == total
    assert delta('edgecache_served_bytes_total{source="cache"}') == total


def test_image_list_is_glances_list_for_each_project(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    ids = {visibility: image.id for visibility, image in world.images.items()}
    expected = {
        # An owner lists its own images of every visibility, plus public ones.
        "a": {ids["public"], ids["private"], ids["shared"], ids["community"]},
        # A member lists the shared image it accepted; community images are not listed.
        "b": {ids["public"], ids["shared"]},
        "c": {ids["public"]},
    }
    for name, creds in (("a", world.a), ("b", world.b), ("c", world.c)):
        through = listed_ids(glance_as(stack, creds, "image-list", image_url=edgecache.url))
        direct = listed_ids(glance_as(stack, creds, "image-list", image_url=stack.glance_url))
        assert through == direct, name
        assert through & set(ids.values()) == expected[name], name


def test_image_show_is_glances_record(world: World, edgecache: EdgecacheDaemon) -> None:
    stack = world.stack
    pairs: tuple[tuple[Credentials, Visibility], ...] = (
        (world.a, "private"),
        (world.b, "shared"),
        (world.c, "public"),
        (world.c, "community"),
    )
    for creds, visibility in pairs:
        image = world.images[visibility]
        through = show(glance_as(stack, creds, "image-show", image.id, image_url=edgecache.url))
        direct = show(glance_as(stack, creds, "image-show", image.id, image_url=stack.glance_url))
        assert through == direct, visibility
        assert through["id"] == image.id
        assert through["checksum"] == image.record["checksum"]
        assert through["os_hash_value"] == image.record["os_hash_value"]
        assert through["size"] == str(len(image.data))


def test_glance_cli_refusals_are_glances(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    """An outsider asking for A's private image: the same 404 through edgecache as from Glance."""
    stack = world.stack
    image = world.images["private"]
    out = str(tmp_path / "never.img")
    for args in (("image-show", image.id), ("image-download", "--file", out, image.id)):
        through = glance_as(stack, world.c, *args, image_url=edgecache.url, check=False)
        direct = glance_as(stack, world.c, *args, image_url=stack.glance_url, check=False)
        assert through.returncode == direct.returncode == 1, args
        assert "404 Not Found" in through.stderr, through.stderr
        assert through.stderr == direct.stderr, args
    assert not Path(out).exists()


def test_openstacksdk_downloads_through_edgecache(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    stack = world.stack
    pairs: tuple[tuple[Credentials, Visibility], ...] = (
        (world.a, "private"),
        (world.c, "community"),
    )
    for creds, visibility in pairs:
        image = world.new_image(visibility)
        for attempt in (1, 2):
            out = tmp_path / f"sdk-{visibility}-{attempt}.img"
            seen = sdk_download(stack, creds, image.id, out, image_url=edgecache.url)
            assert out.read_bytes() == image.data, (visibility, attempt)
            assert seen == {
                "checksum": image.record["checksum"],
                "hash": image.record["os_hash_value"],
                "size": len(image.data),
            }
        assert downloads_settle(stack, image.id, 1) == 1, visibility
