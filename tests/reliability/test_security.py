"""Security: tokens never in logs, the index or error bodies; no cross-project access in any
state; the cache API refuses non-admins; the operator's paths do not exist over TCP."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edgecache.appkeys import CACHE
from tests.conftest import EdgecacheFactory, MiB, UpstreamServer, go_offline, go_online
from tests.fakeglance import ADMIN_TOKEN, FakeGlance, FakeImage, service_credentials
from tests.reliability.conftest import Reporter
from tests.reliability.daemon import Config, Daemons
from tests.reliability.faultproxy import Fault, FaultProxy
from tests.reliability.helpers import (
    app_of,
    download,
    exchange,
    files_containing,
    request_bytes,
)


@dataclass(frozen=True)
class Seen:
    label: str
    status: int | None
    headers: str
    body: bytes


def secret_token(glance: FakeGlance, project: str) -> str:
    token = f"SECRET-{project}-{secrets.token_hex(16)}"
    glance.tokens[token] = project
    return token


async def token_scenario(
    session: aiohttp.ClientSession,
    base: str,
    glance: FakeGlance,
    proxy: FaultProxy,
    upstream: UpstreamServer,
    tokens: dict[str, str],
) -> list[Seen]:
    """Fills, hits, refusals, faults, an upload and an outage, with secret tokens throughout."""
    p1, p2, bogus = tokens["p1"], tokens["p2"], tokens["bogus"]
    own = glance.add_image(os.urandom(MiB), owner="p1")
    flaky = glance.add_image(os.urandom(MiB), owner="p1")
    proxy.script.queue(flaky.id, Fault(reset_at=1000), Fault(flip_at=(5,)))
    data = f"/v2/images/{own.id}/file"
    seen: list[Seen] = []

    async def ask(label: str, method: str, path: str, token: str | None, **extra: str) -> None:
        headers = {**({"X-Auth-Token": token} if token else {}), **extra}
        body = os.urandom(1000) if method == "PUT" else None
        try:
            async with session.request(method, base + path, headers=headers, data=body) as resp:
                seen.append(Seen(label, resp.status, str(resp.headers), await resp.read()))
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            seen.append(Seen(label, None, "", repr(exc).encode()))

    online = [
        ("fill", "GET", data, p1, {}),
        ("hit", "GET", data, p1, {}),
        ("range", "GET", data, p1, {"Range": "bytes=0-9"}),
        ("head", "HEAD", data, p1, {}),
        ("other project", "GET", data, p2, {}),
        ("bogus token", "GET", f"/v2/images/{own.id}", bogus, {}),
        ("list", "GET", "/v2/images", p1, {}),
        ("list other", "GET", "/v2/images?name=x", p2, {}),
        ("members other", "GET", f"/v2/images/{own.id}/members", p2, {}),
        ("cache api member", "GET", "/v2/cache", p1, {}),
        ("cache api bogus", "DELETE", "/v2/cache", bogus, {}),
        ("upload", "PUT", f"/v2/images/{own.id}/file", p1, {}),
        ("corrupt fill", "GET", f"/v2/images/{flaky.id}/file", p1, {}),
        ("multi range", "GET", data, p1, {"Range": "bytes=0-1,2-3"}),
        ("bad range", "GET", data, p1, {"Range": "bytes=x"}),
        ("no token", "GET", data, None, {}),
        ("schema", "GET", "/v2/schemas/image", p1, {}),
        ("json error", "GET", data, bogus, {"Accept": "application/json"}),
    ]
    for label, method, path, token, extra in online:
        await ask(label, method, path, token, **extra)

    await upstream.stop()
    for _ in range(20):  # failed requests are what tell edgecache the uplink is gone
        async with session.get(base + "/healthz") as resp:
            if (await resp.json())["uplink"] == "down":
                break
        await ask("drive offline", "GET", "/versions", p1)
    offline: list[tuple[str, str, str, str | None, dict[str, str]]] = [
        ("offline hit", "GET", data, p1, {}),
        ("offline record", "GET", f"/v2/images/{own.id}", p1, {}),
        ("offline bogus", "GET", data, bogus, {}),
        ("offline other", "GET", data, p2, {}),
        ("offline uncached", "GET", f"/v2/images/{flaky.id}/file", p1, {}),
        ("offline write", "PUT", f"/v2/images/{own.id}/file", p1, {}),
        ("offline cache api", "GET", "/v2/cache", p2, {}),
    ]
    for label, method, path, token, extra in offline:
        await ask(label, method, path, token, **extra)
    await upstream.start()
    return seen


def count_files(root: Path) -> int:
    return sum(1 for path in root.rglob("*") if path.is_file())


def token_leaks(tokens: dict[str, str], texts: dict[str, str | bytes]) -> list[str]:
    leaks = []
    for where, text in texts.items():
        raw = text.encode(errors="replace") if isinstance(text, str) else text
        leaks += [f"{name}'s token in {where}" for name, t in tokens.items() if t.encode() in raw]
    return leaks


def check_answers(seen: list[Seen], tokens: dict[str, str]) -> list[str]:
    texts: dict[str, str | bytes] = {}
    for answer in seen:
        texts[f"answer to {answer.label} (headers)"] = answer.headers
        texts[f"answer to {answer.label} (body)"] = answer.body
    return token_leaks(tokens, texts)


async def test_tokens_never_in_logs_index_or_answers_in_process(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    proxy: FaultProxy,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    caplog: pytest.LogCaptureFixture,
    figures: Reporter,
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = {p: secret_token(glance, p) for p in ("p1", "p2")}
    tokens["bogus"] = f"SECRET-bogus-{secrets.token_hex(16)}"
    edge = await make_edgecache(upstream=proxy.url, probe_interval=0.1, read_timeout=2.0)
    base = str(edge.make_url("")).rstrip("/")
    seen = await token_scenario(edge.session, base, glance, proxy, upstream_server, tokens)
    logs: dict[str, str | bytes] = {"caplog": caplog.text}
    for number, record in enumerate(caplog.records):
        logs[f"log record {number} ({record.name})"] = repr(record.__dict__)
    leaks = token_leaks(tokens, logs)
    leaks += check_answers(seen, tokens)
    leaks += files_containing(cache_dir, [t.encode() for t in tokens.values()])
    statuses = Counter(str(s.status) for s in seen)
    figures.add("leaks", len(leaks))
    figures.note(
        f"{len(seen)} requests (answers {dict(statuses)}), {len(caplog.records)} log records "
        f"at DEBUG, {count_files(cache_dir)} files under the cache dir: "
        f"{len(leaks)} token leaks"
    )
    assert not leaks, leaks
    assert statuses["None"] >= 1, "the corrupt fill should have failed its transfer"
    assert {"200", "401", "404", "503"} <= set(statuses), statuses


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_tokens_never_in_the_daemons_stderr_or_cache_dir(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    proxy: FaultProxy,
    daemons: Daemons,
    tmp_path: Path,
    log_format: str,
    figures: Reporter,
) -> None:
    tokens = {p: secret_token(glance, p) for p in ("p1", "p2")}
    tokens["bogus"] = f"SECRET-bogus-{secrets.token_hex(16)}"
    cache_dir = tmp_path / "cache"
    config: Config = {
        "server": {"log_level": "debug", "log_format": log_format},
        "upstream": {"probe_interval": 0.1, "read_timeout": 2},
    }
    daemon = await daemons.start(proxy.url, cache_dir, config)
    async with aiohttp.ClientSession() as session:
        seen = await token_scenario(session, daemon.url, glance, proxy, upstream_server, tokens)
    assert await daemon.stop() == 0
    stderr = daemon.stderr()
    leaks = token_leaks(tokens, {"stderr": stderr})
    leaks += check_answers(seen, tokens)
    leaks += files_containing(cache_dir, [t.encode() for t in tokens.values()])
    figures.add("leaks", len(leaks))
    figures.note(
        f"daemon at log_level debug, {log_format}: {len(stderr.splitlines())} stderr lines, "
        f"{len(seen)} answers: {len(leaks)} token leaks"
    )
    assert len(stderr.splitlines()) > len(seen), "the daemon logged less than expected"
    assert not leaks, leaks


REFUSED = (401, 403, 404)
UNVALIDATED = (503,)


async def test_cross_project_access_is_refused_in_every_state(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    figures: Reporter,
) -> None:
    owner = glance.add_project("p1")
    other = glance.add_project("p2")
    glance.cache_enabled = True  # the admin's eviction below is Glance's cache_delete decision
    edge = await make_edgecache(probe_interval=0.05)
    private = glance.add_image(os.urandom(MiB), owner="p1")
    attempts_by_state: Counter[str] = Counter()
    problems: list[str] = []

    async def refused(
        state: str, image: FakeImage, token: str | None, statuses: tuple[int, ...] = REFUSED
    ) -> None:
        data = f"/v2/images/{image.id}/file"
        for method, path, extra in (
            ("GET", data, {}),
            ("HEAD", data, {}),
            ("GET", data, {"Range": "bytes=0-99"}),
            ("GET", f"/v2/images/{image.id}", {}),
            ("GET", f"/v2/images/{image.id}/members", {}),
            ("PUT", f"/v2/cache/{image.id}", {}),
        ):
            headers = {**({"X-Auth-Token": token} if token else {}), **extra}
            async with edge.request(method, path, headers=headers) as resp:
                body = await resp.read()
            attempts_by_state[state] += 1
            if resp.status not in statuses or image.data[:64] in body or len(body) > 4096:
                problems.append(f"{state}: {method} {path} {extra} -> {resp.status}")

    async def owner_gets(image: FakeImage) -> None:
        outcome = await download(
            edge.session,
            str(edge.make_url(f"/v2/images/{image.id}/file")),
            image.data,
            {"X-Auth-Token": owner},
        )
        assert outcome.kind == "exact", outcome

    await refused("online, not cached", private, other)
    await owner_gets(private)
    await refused("online, cached", private, other)

    filling = glance.add_image(os.urandom(2 * MiB), owner="p1")
    filling.faults.hold_at = MiB
    fill = asyncio.create_task(owner_gets(filling))
    await filling.faults.reached_hold.wait()
    await refused("mid-fill", filling, other)
    filling.faults.release.set()
    await fill

    stranger = glance.add_project("p3")  # never seen by edgecache
    await go_offline(edge, upstream_server)
    for image in (private, filling):
        await refused("offline, known token", image, other)
        # Nobody can say now whether a token never seen is valid: 503, never bytes.
        await refused("offline, unknown token", image, stranger, UNVALIDATED)
        await refused("offline, no token", image, None)
    await owner_gets(private)  # the owner still gets it: the refusals are not blanket
    await go_online(edge, upstream_server)

    async with edge.delete(f"/v2/cache/{private.id}", headers={"X-Auth-Token": ADMIN_TOKEN}) as r:
        assert r.status == 204
    assert await app_of(edge)[CACHE].index.get(private.id) is None
    await refused("after eviction, online", private, other)
    await go_offline(edge, upstream_server)
    await refused("after eviction, offline", private, other)
    await go_online(edge, upstream_server)

    went_private = glance.add_image(os.urandom(MiB), owner="p1", visibility="public")
    outcome = await download(
        edge.session,
        str(edge.make_url(f"/v2/images/{went_private.id}/file")),
        went_private.data,
        {"X-Auth-Token": other},
    )
    assert outcome.kind == "exact"  # allowed while public
    went_private.visibility = "private"
    await refused("after going private, online", went_private, other)
    await go_offline(edge, upstream_server)
    await refused("after going private, offline", went_private, other)
    await go_online(edge, upstream_server)

    figures.note(
        f"cross-project attempts by state {dict(attempts_by_state)}: {len(problems)} not refused"
    )
    assert not problems, problems


async def test_offline_open_access_ends_once_glance_refuses_an_image_it_had_as_public(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    figures: Reporter,
) -> None:
    """A public image goes private. Glance then answers 404 to a valid token for it; offline,
    another known token that never asked about the image must not be let in on the strength
    of the remembered 'public' record. (Since issue 19 a 404 to one caller changes only what
    is remembered for that caller; what closes the image to the others is that a remembered
    record opens an image to those who never asked only while the service user keeps it
    young, and never without service credentials.)"""
    asker = glance.add_project("p2")
    bystander = glance.add_project("p3")
    edge = await make_edgecache(probe_interval=0.05)
    image = glance.add_image(os.urandom(256 * 1024), owner="p1", visibility="public")
    elsewhere = glance.add_image(os.urandom(1024), owner="p3")
    async with edge.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": asker}) as resp:
        assert resp.status == 200  # edgecache now holds the record: public
    async with edge.get(f"/v2/images/{elsewhere.id}", headers={"X-Auth-Token": bystander}) as r:
        assert r.status == 200  # the bystander's token is known, through another image
    image.visibility = "private"
    async with edge.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": asker}) as resp:
        assert resp.status == 404  # Glance's word: this token may no longer see it
    await go_offline(edge, upstream_server)
    async with edge.get(f"/v2/images/{image.id}", headers={"X-Auth-Token": bystander}) as resp:
        status = resp.status
    await go_online(edge, upstream_server)
    figures.note(f"offline, a bystander asking for an image gone private got {status}")
    # The bystander never asked about the image: "not available" (503) at most, never it.
    assert status in (*REFUSED, 503), f"offline, a stale 'public' record let another in ({status})"


CACHE_API = [
    ("GET", "/v2/cache"),
    ("PUT", "/v2/cache/{id}"),
    ("DELETE", "/v2/cache/{id}"),
    ("DELETE", "/v2/cache"),
    ("POST", "/v2/cache/prune"),
    ("POST", "/v2/cache/clean"),
]


async def test_cache_api_refuses_non_admins(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    figures: Reporter,
) -> None:
    member = glance.add_project("p1")
    # Glance here has no cache API of its own: who is an admin is Keystone's word, never the
    # caller's (the spoofed X-Roles below).
    edge = await make_edgecache(probe_interval=0.05, **service_credentials(upstream_server.url))
    cached = glance.add_image(os.urandom(MiB), owner="p1")
    queued = glance.add_image(os.urandom(MiB), owner="p1")
    outcome = await download(
        edge.session,
        str(edge.make_url(f"/v2/images/{cached.id}/file")),
        cached.data,
        {"X-Auth-Token": member},
    )
    assert outcome.kind == "exact"
    async with edge.get("/v2/cache", headers={"X-Auth-Token": ADMIN_TOKEN}) as resp:
        assert resp.status == 200  # an admin may: the refusals below are about who asks
    answers: Counter[str] = Counter()
    problems: list[str] = []

    async def try_all(state: str, who: str, headers: dict[str, str], expected: int) -> None:
        for method, template in CACHE_API:
            target = queued if method == "PUT" else cached
            path = template.format(id=target.id)
            async with edge.request(method, path, headers=headers) as resp:
                await resp.read()
            answers[f"{state} {who} {resp.status}"] += 1
            if resp.status != expected:
                problems.append(f"{state} {who}: {method} {path} -> {resp.status}")

    callers = [
        ("member", {"X-Auth-Token": member}, 403),
        ("no token", {}, 401),
        ("bogus token", {"X-Auth-Token": "bogus"}, 401),
        ("spoofed roles", {"X-Auth-Token": member, "X-Roles": "admin"}, 403),
    ]
    for who, headers, expected in callers:
        await try_all("online", who, headers, expected)
    await go_offline(edge, upstream_server)
    for who, headers, expected in callers:
        await try_all("offline", who, headers, expected)
    await go_online(edge, upstream_server)
    cache = app_of(edge)[CACHE]
    still_cached = await cache.index.get(cached.id) is not None
    async with edge.get("/v2/cache", headers={"X-Auth-Token": ADMIN_TOKEN}) as resp:
        state = await resp.json()
    figures.note(f"cache API as non-admins: {dict(answers)}; {len(problems)} not refused")
    assert not problems, problems
    assert still_cached
    assert queued.id not in state["queued_images"]
    assert glance.data_requests[queued.id] == 0


ADMIN_VARIANTS = [
    ("GET", "/edgecache/admin/status"),
    ("GET", "/edgecache/admin/cache"),
    ("POST", "/edgecache/admin/verify"),
    ("PUT", "/edgecache/admin/pin/{id}"),
    ("DELETE", "/edgecache/admin/cache/{id}"),
    ("GET", "/edgecache/admin/status/"),
    ("GET", "/edgecache/admin/status?x=1"),
    ("GET", "/%65dgecache/admin/status"),
    ("GET", "/edgecache/%61dmin/status"),
    ("GET", "/edgecache%2fadmin%2fstatus"),
    ("GET", "//edgecache/admin/status"),
    ("GET", "/./edgecache/admin/status"),
    ("GET", "/x/../edgecache/admin/status"),
    ("GET", "/edgecache//admin/status"),
    ("GET", "/EDGECACHE/admin/status"),
    ("GET", "/edgecache/admin/%2e%2e/admin/status"),
    ("GET", "http://127.0.0.1/edgecache/admin/status"),
    ("DELETE", "http://localhost/edgecache/admin/cache/{id}"),
    ("HEAD", "/edgecache/admin/status"),
    ("OPTIONS", "/edgecache/admin/status"),
]


async def test_admin_paths_do_not_exist_over_tcp(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    daemons: Daemons,
    tmp_path: Path,
    figures: Reporter,
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(os.urandom(MiB), owner="p1")
    daemon = await daemons.start(upstream_server.url, tmp_path / "cache")
    async with aiohttp.ClientSession() as session:
        url = f"{daemon.url}/v2/images/{image.id}/file"
        assert (await download(session, url, image.data, {"X-Auth-Token": token})).kind == "exact"
    port = int(daemon.url.rsplit(":", 1)[1])
    answers: Counter[int | None] = Counter()
    problems: list[str] = []
    for method, template in ADMIN_VARIANTS:
        target = template.format(id=image.id)
        for headers in ((), (("X-Auth-Token", ADMIN_TOKEN),)):
            status, answer = await exchange(port, request_bytes(method, target, headers))
            answers[status] += 1
            if status is None or 200 <= status < 300 or b"uplink" in answer:
                problems.append(f"{method} {target} -> {status}")
    connector = aiohttp.UnixConnector(path=str(daemon.admin_socket))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://edgecache/edgecache/admin/cache") as resp,
    ):
        listed = [row["image_id"] for row in (await resp.json())["images"]]
        pinned = [row["pinned"] for row in (await resp.json())["images"]]
    figures.note(
        f"{sum(answers.values())} admin-path variants over TCP answered {dict(answers)}; "
        f"over the Unix socket the cache list works ({len(listed)} image)"
    )
    assert not problems, problems
    assert listed == [image.id], "a variant evicted the image over TCP"
    assert pinned == [False], "a variant pinned the image over TCP"
