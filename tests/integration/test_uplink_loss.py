"""Uplink loss with a real Glance killed under edgecache, and its return.

The scenario runs once (module fixture :func:`outage`) and the tests check what it saw. Each
caller seen before the outage uses one token (``OS_AUTH_TOKEN`` + ``OS_IMAGE_URL``) throughout;
during the outage Keystone stays up (as an edge-site Keystone would), and new tokens are issued
for known and unknown users: edgecache (with ``[keystone]``) remembers Glance's decisions per
identity, so a new token of a known identity keeps its access and nothing more. Glance is
started again however the scenario ends.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    Image,
    World,
    glance_with_token,
    http,
    listed_ids,
    show,
)
from tests.stack import get_token, rest
from tests.stack.edgecache_daemon import EdgecacheDaemon

NEW_PROPERTY = "edge_test_property"


@dataclass
class Observed:
    """What one phase of the scenario saw."""

    cli: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    http: dict[str, rest.Response] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outage:
    cached: Image  # A's private image, shown and downloaded by A's caller before the outage
    uncached: Image  # A's private image that A's caller listed but never downloaded
    before: Observed
    during: Observed
    after: Observed
    glance_downloads_during: dict[str, int]
    back_online_after: float  # seconds from Glance serving again to edgecache saying "up"


def _run_scenario(world: World, edgecache: EdgecacheDaemon, tmp: Path) -> Iterator[Outage]:
    stack = world.stack
    cached, uncached = world.new_image("private"), world.new_image("private")
    token_a, token_c = get_token(world.a), get_token(world.c)
    stranger = stack.create_user_in(world.a, "stranger-a", ["member", "reader"])  # never seen
    demoted = stack.create_user_in(world.a, "demoted-a", ["member", "reader"])
    callers = {
        "a": token_a.value,
        "c": token_c.value,
        "reader": get_token(world.reader).value,
        "demoted": get_token(demoted).value,
        "none": None,
        "bogus": "gAAAAABnot-a-real-token",
    }

    def cli(seen: Observed, key: str, token: str, *args: str) -> None:
        seen.cli[key] = glance_with_token(stack, token, *args, image_url=edgecache.url, check=False)

    def download(seen: Observed, key: str, token: str, image: Image) -> None:
        out = tmp / f"{key}.img"
        out.unlink(missing_ok=True)
        cli(seen, key, token, "image-download", "--file", str(out), image.id)
        if out.exists():
            seen.files[key] = out.read_bytes()

    def probe(seen: Observed, image: Image, label: str, who_is: dict[str, str | None]) -> None:
        for who, token in who_is.items():
            for kind, suffix in (("record", ""), ("file", "/file")):
                url = f"{edgecache.url}/v2/images/{image.id}{suffix}"
                seen.http[f"{label}:{kind}:{who}"] = http("GET", url, token, timeout=30)

    before, during, after = Observed(), Observed(), Observed()
    cli(before, "list", token_a.value, "image-list")
    cli(before, "show", token_a.value, "image-show", cached.id)
    download(before, "download", token_a.value, cached)
    cli(before, "show-c", token_c.value, "image-show", cached.id)
    probe(before, cached, "cached", callers)
    assert stack.count_image_downloads(cached.id, at_least=1) == 1

    stack.stop_glance(kill=True)  # like a cut uplink: connections refused from now on
    try:
        cli(during, "show", token_a.value, "image-show", cached.id)
        download(during, "download", token_a.value, cached)
        cli(during, "list", token_a.value, "image-list")
        during.health = edgecache.health()
        probe(during, cached, "cached", {k: v for k, v in callers.items() if k != "demoted"})
        stack.revoke_role(demoted, "member")
        issued_during = {  # Keystone is up: tokens issued while Glance cannot be asked
            "renewed": get_token(world.a).value,
            "reader-renewed": get_token(world.reader).value,
            "stranger": get_token(stranger).value,
            "demoted-renewed": get_token(demoted).value,
        }
        probe(during, cached, "cached", issued_during)
        download(during, "download-renewed", issued_during["renewed"], cached)
        download(during, "download-uncached", token_a.value, uncached)
        during.http["uncached:file:a"] = http(
            "GET", f"{edgecache.url}/v2/images/{uncached.id}/file", token_a, timeout=30
        )
        cli(during, "show-c", token_c.value, "image-show", cached.id)
        cli(during, "show-stranger", issued_during["stranger"], "image-show", cached.id)
        download(during, "download-c", token_c.value, cached)
    finally:
        downloads_during = {
            "cached": stack.count_image_downloads(cached.id),
            "uncached": stack.count_image_downloads(uncached.id),
        }
        stack.start_glance()
    glance_back = time.monotonic()
    edgecache.wait_uplink("up", timeout=30)
    back_online_after = time.monotonic() - glance_back

    # Fresh answers again: a change made in Glance shows through edgecache at once.
    patch = [{"op": "add", "path": f"/{NEW_PROPERTY}", "value": "after-outage"}]
    rest.request(
        "PATCH",
        f"{stack.glance_url}/v2/images/{cached.id}",
        token=token_a.value,
        body=json.dumps(patch).encode(),
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
        expect={200},
    )
    cli(after, "show", token_a.value, "image-show", cached.id)
    after.http["record"] = http("GET", f"{edgecache.url}/v2/images/{cached.id}", token_a)
    download(after, "download-uncached", token_a.value, uncached)
    yield Outage(cached, uncached, before, during, after, downloads_during, back_online_after)


@pytest.fixture(scope="module")
def outage(world: World, edgecache: EdgecacheDaemon, integ_dir: Path) -> Iterator[Outage]:
    scratch = integ_dir / "outage"
    scratch.mkdir()
    yield from _run_scenario(world, edgecache, scratch)


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def test_before_the_outage_glance_answered(outage: Outage) -> None:
    before = outage.before
    assert outage.cached.id in listed_ids(_ok(before.cli["list"]))
    assert outage.uncached.id in listed_ids(before.cli["list"])
    assert show(_ok(before.cli["show"]))["checksum"] == outage.cached.record["checksum"]
    assert before.files["download"] == outage.cached.data
    assert before.cli["show-c"].returncode == 1
    assert "404 Not Found" in before.cli["show-c"].stderr


def test_owner_is_served_from_the_cache_while_glance_is_down(outage: Outage) -> None:
    before, during = outage.before, outage.during
    assert during.health["uplink"] == "down"
    assert show(_ok(during.cli["show"])) == show(before.cli["show"])
    _ok(during.cli["download"])
    assert during.files["download"] == outage.cached.data
    assert listed_ids(_ok(during.cli["list"])) == listed_ids(before.cli["list"])
    data = during.http["cached:file:a"]
    assert data.status == 200
    assert data.body == outage.cached.data
    assert data.headers["X-Edgecache-Source"] == "cache"
    record = during.http["cached:record:a"]
    assert record.status == 200
    assert json.loads(record.body)["id"] == outage.cached.id
    assert outage.glance_downloads_during == {"cached": 1, "uncached": 0}


def test_others_are_refused_while_glance_is_down(outage: Outage) -> None:
    """As Glance answered them before (C: 404, the reader: no download) or would (no token, or
    one Keystone says is invalid: 401); identities Glance never answered (a user never seen, a
    user whose role changed) 503, since what Glance would say cannot be known now; never
    bytes."""
    before, during = outage.before, outage.during
    expected = {
        ("c", "record"): 404,
        ("c", "file"): 404,
        ("reader", "record"): 200,
        ("reader", "file"): 403,
        ("reader-renewed", "record"): 200,
        ("reader-renewed", "file"): 403,
        ("stranger", "record"): 503,
        ("stranger", "file"): 503,
        ("demoted-renewed", "record"): 503,
        ("demoted-renewed", "file"): 503,
    }
    for who in ("c", "reader", "reader-renewed", "none", "bogus", "stranger", "demoted-renewed"):
        for kind in ("record", "file"):
            status = expected.get((who, kind), 401)
            seen = during.http[f"cached:{kind}:{who}"]
            assert seen.status == status, (who, kind, seen.body[:200])
            assert outage.cached.data[:4096] not in seen.body
            if f"cached:{kind}:{who}" in before.http:  # what Glance answered this token before
                assert before.http[f"cached:{kind}:{who}"].status == status, (who, kind)
    assert before.http["cached:file:demoted"].status == 200  # before its role was removed
    for key in ("show-c", "show-stranger", "download-c"):
        assert during.cli[key].returncode == 1, key
    assert "download-c" not in during.files


def test_a_token_issued_during_the_outage_keeps_its_users_access(outage: Outage) -> None:
    during = outage.during
    for kind in ("record", "file"):
        assert during.http[f"cached:{kind}:renewed"].status == 200
    assert during.http["cached:file:renewed"].body == outage.cached.data
    _ok(during.cli["download-renewed"])
    assert during.files["download-renewed"] == outage.cached.data


def test_image_never_downloaded_is_503_while_glance_is_down(outage: Outage) -> None:
    answer = outage.during.http["uncached:file:a"]
    assert answer.status == 503
    assert answer.headers["Retry-After"]
    assert outage.during.cli["download-uncached"].returncode == 1
    assert "download-uncached" not in outage.during.files


def test_edgecache_refusals_read_like_glances_in_the_glance_cli(outage: Outage) -> None:
    """edgecache's own error answers (given while Glance is down) must be readable by the
    glance CLI the way Glance's are: it prints "HTTP <status> ..." for Glance's errors, and
    its shell turns any 401 (keystonemiddleware's, as Glance sends it) into one sentence."""
    problems = {}
    for key, expected in (
        ("show-c", r"\b404\b"),
        ("download-c", r"\b404\b"),
        ("show-stranger", r"\b503\b"),
        ("download-uncached", r"\b503\b"),
    ):
        stderr = outage.during.cli[key].stderr
        if not re.search(expected, stderr.strip()):
            problems[key] = stderr.strip()
    assert not problems, f"the glance CLI printed these instead of HTTP errors: {problems}"


def test_edgecache_goes_back_online_by_itself_and_answers_fresh(outage: Outage) -> None:
    after = outage.after
    assert outage.back_online_after < 10
    assert show(_ok(after.cli["show"])).get(NEW_PROPERTY) == "after-outage"
    record = after.http["record"]
    assert record.status == 200
    assert json.loads(record.body)[NEW_PROPERTY] == "after-outage"
    assert "Age" not in record.headers
    _ok(after.cli["download-uncached"])
    assert after.files["download-uncached"] == outage.uncached.data
