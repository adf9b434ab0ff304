"""nova's own image code (nova 34 from PyPI) against edgecache and the real Keystone + Glance.

nova-compute reads an image with ``nova.image.glance.API().get()`` (which is
``GlanceImageServiceV2.show()``) and fetches it with ``API().download(dest_path=...)``, through
python-glanceclient pointed at ``[glance] endpoint_override``. Here that code runs unmodified,
in its own cached venv (:data:`NOVA_REQUIREMENTS`, built like the stack's), as a real project
member with a real Keystone token, with ``endpoint_override`` at a dedicated edgecache:

1. online, cold: the image comes from Glance through a fill (a miss);
2. online again: a hit, with no new whole-image GET at Glance;
3. on a fresh edgecache of its own, after only an operator's ``edgecache warm`` (nothing else
   read those images, nor any schema or version document, through it), with Glance killed: a
   member of another project, known to edgecache from one earlier record GET but holding a
   token issued during the outage, boots a public and a community image with exact bytes,
   while private images that identity never asked about stay refused.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Image, World, http, running
from tests.stack import Credentials, OpenStackStack, StackError, get_token, rest
from tests.stack.edgecache_daemon import EdgecacheDaemon
from tests.stack.install import ensure_stack_venv

NOVA_REQUIREMENTS: tuple[str, ...] = ("nova==34.*",)
ROLES = ("member", "reader")  # what stack.create_project_user grants
EDGECACHE_CLI = Path(sys.executable).parent / "edgecache"  # the project venv's console command

# Run with the nova venv's interpreter: for each image, nova's get() then download(), each
# result (or the exception nova raised) as JSON on the last line of stdout.
NOVA_BOOT = """
import hashlib, json, os, sys

import nova.conf
from nova import context as nova_context
from nova.image import glance

url, token, user_id, project_id, roles, out_dir, *image_ids = sys.argv[1:]
CONF = nova.conf.CONF
CONF([], project="nova", default_config_files=[])
CONF.set_override("endpoint_override", url, group="glance")
ctx = nova_context.RequestContext(
    user_id=user_id, project_id=project_id, auth_token=token, roles=roles.split(",")
)
api = glance.API()


def failure(exc):
    return {"ok": False, "error": type(exc).__name__, "message": str(exc)[:500]}


results = {}
for image_id in image_ids:
    result = results[image_id] = {}
    try:
        meta = api.get(ctx, image_id)
        keys = ("id", "status", "size", "checksum", "os_hash_algo", "os_hash_value", "is_public")
        result["show"] = {"ok": True, **{key: meta.get(key) for key in keys}}
    except Exception as exc:
        result["show"] = failure(exc)
    path = os.path.join(out_dir, image_id + ".img")
    try:
        api.download(ctx, image_id, dest_path=path)
    except Exception as exc:
        result["download"] = failure(exc)
        result["download"]["file_exists"] = os.path.exists(path)
        continue
    md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            md5.update(piece)
            sha512.update(piece)
            size += len(piece)
    result["download"] = {
        "ok": True, "path": path, "size": size, "md5": md5.hexdigest(), "sha512": sha512.hexdigest()
    }
print(json.dumps(results))
"""


# -- machinery ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nova_python() -> Path:
    """The interpreter of a venv with nova from PyPI (built once, cached like the stack's)."""
    try:
        venv = ensure_stack_venv(requirements=NOVA_REQUIREMENTS)
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"nova could not be installed from PyPI: {exc}", pytrace=False)
    return venv / "bin" / "python"


def own_edgecache(stack: OpenStackStack, base_dir: Path) -> Iterator[EdgecacheDaemon]:
    """A fresh edgecache of our own in front of the stack's Glance, knowing identities
    through Keystone (the ``[keystone]`` section, as the session one)."""
    yield from running(EdgecacheDaemon(base_dir, stack.glance_url, keystone=stack.glance_service))


@pytest.fixture(scope="module")
def edgecache(stack: OpenStackStack, integ_dir: Path) -> Iterator[EdgecacheDaemon]:
    """This module's edgecache for the online scenarios (the same fixture name as the session
    one, so a failing test's report ends with this daemon's log)."""
    yield from own_edgecache(stack, integ_dir / "edgecache-nova")


@pytest.fixture(scope="module")
def scratch(integ_dir: Path) -> Path:
    path = integ_dir / "nova"
    path.mkdir(exist_ok=True)
    return path


def nova_boot(
    nova: Path,
    stack: OpenStackStack,
    edgecache: EdgecacheDaemon,
    creds: Credentials,
    token: str,
    images: list[Image],
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """nova's get() + download() of each image as ``creds`` with ``token``; by image id."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [str(nova), "-c", NOVA_BOOT, edgecache.url, token, creds.user_id, creds.project_id]
    argv += [",".join(ROLES), str(out_dir), *(image.id for image in images)]
    result = subprocess.run(
        argv, env=stack.client_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    answer: dict[str, dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def assert_booted(result: dict[str, Any], image: Image) -> None:
    """nova saw Glance's record and wrote exactly Glance's bytes."""
    record = image.record
    assert result["show"]["ok"], result["show"]
    assert result["show"]["id"] == image.id
    assert result["show"]["checksum"] == record["checksum"]
    assert result["show"]["os_hash_value"] == record["os_hash_value"]
    assert result["show"]["size"] == record["size"] == len(image.data)
    assert result["download"]["ok"], result["download"]
    assert record["os_hash_algo"] == "sha512"
    assert result["download"]["sha512"] == record["os_hash_value"]
    assert result["download"]["md5"] == record["checksum"]
    assert result["download"]["size"] == record["size"]
    assert Path(result["download"]["path"]).read_bytes() == image.data


def data_results(edgecache: EdgecacheDaemon) -> dict[str, float]:
    """``edgecache_data_requests_total`` by result."""
    pattern = re.compile(r'^edgecache_data_requests_total\{result="([a-z_]+)"\}$')
    return {
        m[1]: value for name, value in edgecache.metrics().items() if (m := pattern.match(name))
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    """What changed, zeros left out."""
    keys = after.keys() | before.keys()
    changes = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in keys}
    return {key: value for key, value in changes.items() if value}


def access_lines(edgecache: EdgecacheDaemon, offset: int) -> list[str]:
    """edgecache's log lines written since ``offset`` (a byte offset into its log)."""
    with edgecache.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace").splitlines()


# -- 1 and 2: online ------------------------------------------------------------------------


@dataclass
class Cold:
    image: Image
    result: dict[str, Any]
    data_requests: dict[str, float]  # change in edgecache_data_requests_total by result
    glance_whole_gets: int


@pytest.fixture(scope="module")
def cold(nova_python: Path, world: World, edgecache: EdgecacheDaemon, scratch: Path) -> Cold:
    """B boots A's image shared with B, never seen by edgecache: nova's first read of it."""
    image = world.new_image("shared")
    before = data_results(edgecache)
    token = get_token(world.b).value
    results = nova_boot(
        nova_python, world.stack, edgecache, world.b, token, [image], scratch / "cold"
    )
    return Cold(
        image,
        results[image.id],
        delta(data_results(edgecache), before),
        world.stack.count_image_downloads(image.id, at_least=1),
    )


def test_online_cold_nova_boots_through_a_fill(cold: Cold) -> None:
    assert_booted(cold.result, cold.image)
    assert cold.data_requests == {"miss": 1}
    assert cold.glance_whole_gets == 1


def test_online_again_nova_boots_from_the_cache(
    cold: Cold, nova_python: Path, world: World, edgecache: EdgecacheDaemon, scratch: Path
) -> None:
    before = data_results(edgecache)
    token = get_token(world.b).value
    results = nova_boot(
        nova_python, world.stack, edgecache, world.b, token, [cold.image], scratch / "hit"
    )
    assert_booted(results[cold.image.id], cold.image)
    assert delta(data_results(edgecache), before) == {"hit": 1}
    # Glance sent the whole image once, for the fill; nothing since (a wrong second whole
    # GET would be logged within moments: wait a second for it).
    assert world.stack.count_image_downloads(cold.image.id, at_least=2, timeout=1) == 1


# -- 3: offline after only a warm -----------------------------------------------------------


@dataclass
class Outage:
    bootable: list[Image]  # public (admin's) and community (A's): B may boot them
    refused: list[Image]  # A's private image, and B's own private one B never asked about
    warm: subprocess.CompletedProcess[str]
    warm_data_requests: dict[str, float]
    glance_whole_gets_after_warm: dict[str, int]
    uplink_during: str
    results: dict[str, dict[str, Any]]
    files: dict[str, rest.Response]  # GET /file of the refused images, as B, during the outage
    data_requests: dict[str, float]  # during the outage
    glance_whole_gets_during: dict[str, int]
    edgecache_log: list[str]  # what edgecache logged while nova ran offline


def _run_outage(
    nova_python: Path, world: World, edgecache: EdgecacheDaemon, scratch: Path
) -> Outage:
    stack = world.stack
    public, community = world.new_image("public"), world.new_image("community")
    private_a = world.new_image("private")
    own = get_token(world.b)
    data = os.urandom(len(public.data))
    private_b = Image(stack.create_image(own, "private-of-b", data), data)
    images = [public, community, private_a, private_b]

    # B is known to edgecache: it read another image's record through it before (a plain
    # GET, so that no schema or version document is read through this daemon before the
    # warm).
    shared = world.images["shared"]
    http("GET", f"{edgecache.url}/v2/images/{shared.id}", own, expect={200})

    # The operator's prefetch, with an admin token; nothing else asks for these images.
    before_warm = data_results(edgecache)
    admin = stack.admin_token().value
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "EDGECACHE_"))}
    argv = [str(EDGECACHE_CLI), "warm", "--endpoint", edgecache.url, "--token", admin]
    warm = subprocess.run(
        [*argv, *(image.id for image in images)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    warm_data_requests = delta(data_results(edgecache), before_warm)
    after_warm = {image.id: stack.count_image_downloads(image.id, at_least=1) for image in images}

    before = data_results(edgecache)
    log_offset = edgecache.log_path.stat().st_size
    stack.stop_glance(kill=True)  # the uplink is cut
    try:
        token = get_token(world.b).value  # issued during the outage: Keystone is at the edge
        assert token != own.value  # a token string edgecache has never seen
        results = nova_boot(
            nova_python, stack, edgecache, world.b, token, images, scratch / "offline"
        )
        uplink = edgecache.health()["uplink"]
        data_requests = delta(data_results(edgecache), before)
        # nova stops at the refused record; the data itself, asked for with the same token:
        files = {
            image.id: http("GET", f"{edgecache.url}/v2/images/{image.id}/file", token, timeout=30)
            for image in (private_a, private_b)
        }
        during = {image.id: stack.count_image_downloads(image.id) for image in images}
        log = access_lines(edgecache, log_offset)
    finally:
        stack.start_glance()
    edgecache.wait_uplink("up", timeout=30)
    return Outage(
        [public, community],
        [private_a, private_b],
        warm,
        warm_data_requests,
        after_warm,
        uplink,
        results,
        files,
        data_requests,
        during,
        log,
    )


class TestOfflineAfterOnlyAWarm:
    """Its own fresh edgecache: before Glance goes, that daemon saw only its own start-up,
    one record GET by B (so B's identity is known) and the operator's warm."""

    @pytest.fixture(scope="class")
    @classmethod
    def edgecache(cls, stack: OpenStackStack, integ_dir: Path) -> Iterator[EdgecacheDaemon]:
        yield from own_edgecache(stack, integ_dir / "edgecache-nova-offline")

    @pytest.fixture(scope="class")
    @classmethod
    def outage(
        cls, nova_python: Path, world: World, edgecache: EdgecacheDaemon, scratch: Path
    ) -> Outage:
        return _run_outage(nova_python, world, edgecache, scratch)

    def test_the_operator_warm_filled_the_cache(self, outage: Outage) -> None:
        assert outage.warm.returncode == 0, outage.warm.stdout + outage.warm.stderr
        images = outage.bootable + outage.refused
        assert outage.warm_data_requests == {"miss": len(images)}
        assert outage.glance_whole_gets_after_warm == {image.id: 1 for image in images}

    def test_offline_after_only_a_warm_nova_boots_public_and_community_images(
        self, outage: Outage
    ) -> None:
        assert outage.uplink_during == "down"
        problems = {}
        for image in outage.bootable:
            try:
                assert_booted(outage.results[image.id], image)
            except AssertionError as exc:
                problems[image.record["visibility"]] = str(exc)
        assert not problems, (problems, "edgecache log during the outage:", outage.edgecache_log)
        assert outage.data_requests.get("hit") == len(outage.bootable), outage.data_requests
        assert "miss" not in outage.data_requests
        assert "unavailable" not in outage.data_requests
        assert outage.glance_whole_gets_during == outage.glance_whole_gets_after_warm

    def test_offline_private_images_never_asked_about_stay_refused(self, outage: Outage) -> None:
        """A's private image (Glance says 404 to B) and B's own private image (Glance would say
        200, but never said it to B): edgecache cannot know, so nova gets Glance's 404."""
        for image in outage.refused:
            result = outage.results[image.id]
            assert result["show"]["ok"] is False, (image.record["name"], result)
            assert result["show"]["error"] == "ImageNotFound", result
            assert result["download"]["ok"] is False, (image.record["name"], result)
            assert result["download"]["error"] == "ImageNotFound", result
            assert result["download"]["file_exists"] is False
            answer = outage.files[image.id]
            assert answer.status == 404, (image.record["name"], answer.status, answer.body[:300])
            assert image.data[:4096] not in answer.body
