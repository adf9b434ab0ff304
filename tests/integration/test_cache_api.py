"""Glance's cache management API answered by edgecache: `glance cache-list`, `cache-queue`,
`cache-delete`, `cache-clear` as an admin; refused for a project member, as Glance refuses.

Each action is Glance's own decision (its policies `cache_list`, `cache_image`,
`cache_delete`), asked of the stack's Glance, which has no image cache of its own (404: only
admins known through `[keystone]`), and of the same Glance served with its image cache on and
a policy that lets project members list the cache, but not queue or delete.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.integration.conftest import World, downloads_settle, glance_as, http, running
from tests.stack import StackError, get_token
from tests.stack.edgecache_daemon import EdgecacheDaemon
from tests.stack.openstack import GLANCE_POLICY

USABLE = ("CURRENT", "SUPPORTED", "EXPERIMENTAL")  # what glanceclient's has_version accepts
# Members may see what is cached; queueing and deleting stay Glance's default (admins only).
MEMBERS_MAY_LIST = {**GLANCE_POLICY, "cache_list": "role:admin or role:member"}


@pytest.fixture(scope="module")
def caching_glance(world: World) -> str:
    """The stack's Glance served a second time, with its own image cache on (so its cache
    management API answers) and MEMBERS_MAY_LIST as its policy."""
    try:
        return world.stack.serve_glance_with_cache(MEMBERS_MAY_LIST)
    except StackError as exc:
        pytest.fail(f"Glance with its image cache could not start: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def edgecache_of_caching_glance(caching_glance: str, integ_dir: Path) -> Iterator[EdgecacheDaemon]:
    """Without [keystone]: every decision is Glance's answer."""
    yield from running(EdgecacheDaemon(integ_dir / "edgecache-caching-glance", caching_glance))


def cache_rows(result: CompletedProcess[str]) -> dict[str, str]:
    """`glance cache-list` output as {image id: state ("cached" or "queued")}."""
    rows = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and len(cells[0]) == 36:
            rows[cells[0]] = cells[1]
    return rows


def cached_state(edgecache: EdgecacheDaemon, token: str) -> dict[str, list[str]]:
    body = http("GET", f"{edgecache.url}/v2/cache", token, expect={200}).json()
    return {
        "cached": sorted(entry["image_id"] for entry in body["cached_images"]),
        "queued": sorted(body["queued_images"]),
    }


def wait_cached(edgecache: EdgecacheDaemon, token: str, image_id: str) -> None:
    deadline = time.monotonic() + 30
    while image_id not in cached_state(edgecache, token)["cached"]:
        assert time.monotonic() < deadline, f"{image_id} was never cached"
        time.sleep(0.1)


def test_versions_document_advertises_the_cache_api(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    """glanceclient refuses every cache command unless `/versions` lists v2.14 (v2.18 for
    cache-clean / cache-prune). The regional Glance does not list them when its own image
    cache is off, which is exactly the Glance edgecache stands in front of; edgecache answers
    that API itself, so its version document has to say so."""
    glance_doc = http("GET", f"{world.stack.glance_url}/versions", expect={200}).json()
    doc = http("GET", f"{edgecache.url}/versions", expect={200}).json()
    statuses = {version["id"]: version["status"] for version in doc["versions"]}
    for version in glance_doc["versions"]:  # nothing Glance offers is taken away
        assert statuses.get(version["id"]) in USABLE, version["id"]
    for link in (link for version in doc["versions"] for link in version["links"]):
        assert link["href"].startswith(edgecache.url), link
    missing = [v for v in ("v2.14", "v2.16", "v2.18") if statuses.get(v) not in USABLE]
    assert not missing, f"edgecache's /versions does not list {missing}: {statuses}"


def test_glance_cache_commands_as_admin(world: World, edgecache: EdgecacheDaemon) -> None:
    stack = world.stack
    admin_token = stack.admin_token().value
    token = get_token(world.a).value
    downloaded, queued = world.new_image("private"), world.new_image("private")
    file_url = f"{edgecache.url}/v2/images/{{}}/file"
    got = http("GET", file_url.format(downloaded.id), token, expect={200})
    assert got.body == downloaded.data

    def cache(*args: str) -> CompletedProcess[str]:
        result = glance_as(stack, stack.admin, *args, image_url=edgecache.url, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stderr == "", result.stderr  # cache-queue/-delete/-clear exit 0 on errors
        return result

    rows = cache_rows(cache("cache-list"))
    assert rows.get(downloaded.id) == "cached"
    assert queued.id not in rows

    cache("cache-queue", queued.id)
    wait_cached(edgecache, admin_token, queued.id)
    assert cache_rows(cache("cache-list")).get(queued.id) == "cached"
    got = http("GET", file_url.format(queued.id), token, expect={200})
    assert got.body == queued.data
    assert got.headers["X-Edgecache-Source"] == "cache"
    assert downloads_settle(stack, queued.id, 1) == 1  # the prefetch was the only data GET

    cache("cache-delete", downloaded.id)
    assert downloaded.id not in cache_rows(cache("cache-list"))
    got = http("GET", file_url.format(downloaded.id), token, expect={200})
    assert got.body == downloaded.data
    assert got.headers["X-Edgecache-Source"] == "fill"  # deleted: fetched again
    assert downloads_settle(stack, downloaded.id, 2) == 2

    cache("cache-clear")
    assert cache_rows(cache("cache-list")) == {}
    assert cached_state(edgecache, admin_token) == {"cached": [], "queued": []}


def test_glance_cache_commands_refused_for_a_member(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    image = world.new_image("private")
    admin_token = stack.admin_token().value
    http("PUT", f"{edgecache.url}/v2/cache/{image.id}", admin_token, expect={202})
    wait_cached(edgecache, admin_token, image.id)
    before = cached_state(edgecache, admin_token)

    # Glance itself: a member may not manage the cache (policy), before anything else.
    direct = glance_as(stack, world.a, "cache-list", image_url=stack.glance_url, check=False)
    through = glance_as(stack, world.a, "cache-list", image_url=edgecache.url, check=False)
    assert through.returncode == 1
    assert "403 Forbidden" in through.stderr, through.stderr
    assert direct.returncode == 1
    for args, refusal in (
        (("cache-queue", image.id), "You are not permitted to queue the image"),
        (("cache-delete", image.id), "You are not permitted to delete the image"),
        (("cache-clear",), "You are not permitted to delete image(s) from cache"),
    ):
        result = glance_as(stack, world.a, *args, image_url=edgecache.url, check=False)
        assert refusal in result.stderr, (args, result.stderr)
    assert cached_state(edgecache, admin_token) == before


def test_cache_api_as_glanceclient_calls_it(world: World, edgecache: EdgecacheDaemon) -> None:
    """The same endpoints over plain HTTP, so the API is checked even where the CLI refuses."""
    stack = world.stack
    admin = stack.admin_token().value
    member = get_token(world.a).value
    image = world.new_image("private")
    cache = f"{edgecache.url}/v2/cache"

    # Glance's own answers to the member and to no token, and edgecache's: the same.
    assert http("GET", f"{stack.glance_url}/v2/cache", member).status == 403
    assert http("GET", f"{stack.glance_url}/v2/cache").status == 401
    for method, url in (
        ("GET", cache),
        ("PUT", f"{cache}/{image.id}"),
        ("DELETE", f"{cache}/{image.id}"),
        ("DELETE", cache),
        ("POST", f"{cache}/prune"),
        ("POST", f"{cache}/clean"),
    ):
        assert http(method, url, member).status == 403, (method, url)
        assert http(method, url).status == 401, (method, url)
        assert http(method, url, "not-a-token").status == 401, (method, url)

    assert http("PUT", f"{cache}/{image.id}", admin).status == 202
    wait_cached(edgecache, admin, image.id)
    entry = next(
        e
        for e in http("GET", cache, admin, expect={200}).json()["cached_images"]
        if e["image_id"] == image.id
    )
    assert entry["size"] == len(image.data)
    assert entry["hits"] == 0
    assert entry["last_accessed"] == 0
    got = http("GET", f"{edgecache.url}/v2/images/{image.id}/file", member, expect={200})
    assert got.body == image.data
    assert http("DELETE", f"{cache}/{image.id}", admin).status == 204
    assert image.id not in cached_state(edgecache, admin)["cached"]
    assert http("DELETE", f"{cache}/{image.id}", admin).status == 404
    for target, status in (("queue", 204), ("cache", 204), ("x", 400)):
        headers = {"x-image-cache-clear-target": target}
        assert http("DELETE", cache, admin, headers=headers).status == status, target
    assert http("POST", f"{cache}/prune", admin).status == 200
    assert http("POST", f"{cache}/clean", admin).status == 200


def test_without_glances_cache_api_an_admin_needs_keystone(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    """The stack's Glance has no image cache: it answers 404 to an admin and decides nothing.
    Only Keystone's word that the token carries the admin role lets the admin in."""
    stack = world.stack
    admin = stack.admin_token().value
    image = world.new_image("private")
    assert http("GET", f"{stack.glance_url}/v2/cache", admin).status == 404  # the stack itself
    actions = (
        ("GET", "/v2/cache", 200),
        ("PUT", f"/v2/cache/{image.id}", 202),
        ("DELETE", f"/v2/cache/{image.id}", 204),
        ("DELETE", "/v2/cache", 204),
        ("POST", "/v2/cache/prune", 200),
        ("POST", "/v2/cache/clean", 200),
    )
    with EdgecacheDaemon(tmp_path / "edgecache", stack.glance_url) as without_keystone:
        for method, path, _allowed in actions:
            answer = http(method, f"{without_keystone.url}{path}", admin)
            assert answer.status == 403, (method, path)
            assert "admin role" in answer.body.decode(), answer.body[:300]
        assert http("GET", f"{without_keystone.url}/v2/images/{image.id}", admin).status == 200

    for method, path, allowed in actions:  # edgecache with [keystone]
        assert http(method, f"{edgecache.url}{path}", admin).status == allowed, (method, path)
        if method == "PUT":
            wait_cached(edgecache, admin, image.id)


def test_each_action_is_decided_by_its_own_glance_policy(
    world: World, caching_glance: str, edgecache_of_caching_glance: EdgecacheDaemon
) -> None:
    """Glance lets members list its cache, not queue or delete: edgecache asks it per action."""
    stack, edgecache = world.stack, edgecache_of_caching_glance
    member = get_token(world.a).value
    image = world.new_image("private")
    got = http("GET", f"{edgecache.url}/v2/images/{image.id}/file", member, expect={200})
    assert got.body == image.data
    cache = f"{edgecache.url}/v2/cache"

    assert http("GET", f"{caching_glance}/v2/cache", member).status == 200  # Glance's own
    assert image.id in cached_state(edgecache, member)["cached"]
    listed = glance_as(stack, world.a, "cache-list", image_url=edgecache.url, check=False)
    assert listed.returncode == 0, listed.stderr
    assert cache_rows(listed).get(image.id) == "cached"
    for method, url in (
        ("PUT", f"{cache}/{image.id}"),
        ("DELETE", f"{cache}/{image.id}"),
        ("DELETE", cache),
        ("POST", f"{cache}/prune"),
        ("POST", f"{cache}/clean"),
    ):
        answer = http(method, url, member)
        assert answer.status == 403, (method, url, answer.status)
        assert image.data[:64] not in answer.body
    queued = glance_as(
        stack, world.a, "cache-queue", image.id, image_url=edgecache.url, check=False
    )
    assert "You are not permitted to queue the image" in queued.stderr, queued.stderr
    assert image.id in cached_state(edgecache, member)["cached"]  # nothing was deleted


def test_admin_actions_at_a_glance_with_its_own_cache(
    world: World, caching_glance: str, edgecache_of_caching_glance: EdgecacheDaemon
) -> None:
    """Glance's answers allow the admin; queueing is the admin's own request to Glance too
    (Glance caches the image as well), and asking cache_delete deletes nothing at Glance."""
    edgecache = edgecache_of_caching_glance
    admin = world.stack.admin_token().value
    image = world.new_image("private")
    cache = f"{edgecache.url}/v2/cache"

    assert http("PUT", f"{cache}/{image.id}", admin).status == 202
    wait_cached(edgecache, admin, image.id)
    wait_glance_cached(caching_glance, admin, image.id)
    assert http("DELETE", f"{cache}/{image.id}", admin).status == 204
    assert image.id not in cached_state(edgecache, admin)["cached"]
    assert http("DELETE", cache, admin).status == 204
    assert http("POST", f"{cache}/prune", admin).status == 200
    assert http("POST", f"{cache}/clean", admin).status == 200
    assert image.id in glance_cached(caching_glance, admin)  # the region's cache as it was


def glance_cached(glance_url: str, token: str) -> set[str]:
    """What Glance's own image cache holds."""
    body = http("GET", f"{glance_url}/v2/cache", token, expect={200}).json()
    return {entry["image_id"] for entry in body["cached_images"]}


def wait_glance_cached(glance_url: str, token: str, image_id: str) -> None:
    deadline = time.monotonic() + 60
    while image_id not in glance_cached(glance_url, token):
        assert time.monotonic() < deadline, f"Glance never cached {image_id}"
        time.sleep(0.1)


def test_glance_cache_clean_removes_quarantined_copies(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    member = get_token(world.a).value
    image = world.new_image("private", size=256 * 1024)
    file_url = f"{edgecache.url}/v2/images/{image.id}/file"
    assert http("GET", file_url, member, expect={200}).body == image.data
    blob = edgecache.cache_dir / "blobs" / image.id
    with blob.open("r+b") as handle:  # a bit flips on disk
        first = handle.read(1)[0]
        handle.seek(0)
        handle.write(bytes([first ^ 1]))
    got = http("GET", file_url, member, expect={200})
    assert (got.body, got.headers["X-Edgecache-Source"]) == (image.data, "fill")
    quarantine = edgecache.cache_dir / "quarantine"
    assert [path.name.split(".")[0] for path in quarantine.iterdir()] == [image.id]

    refused = glance_as(stack, world.a, "cache-clean", image_url=edgecache.url, check=False)
    assert "You are not permitted to clean the image cache" in refused.stderr, refused.stderr
    assert list(quarantine.iterdir())
    cleaned = glance_as(stack, stack.admin, "cache-clean", image_url=edgecache.url, check=False)
    assert (cleaned.returncode, cleaned.stderr) == (0, "")
    assert not list(quarantine.iterdir())
