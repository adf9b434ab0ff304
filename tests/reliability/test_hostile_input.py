"""Hostile input against an in-process edgecache in front of the fake Glance: a bounded, seeded
fuzzing loop and Hypothesis properties over paths, query strings, headers and Range values,
sent as raw bytes. Only 2xx-4xx answers (never a 5xx), the daemon keeps serving, and nothing
outside the cache dir is touched."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecache.app import create_app
from edgecache.appkeys import METRICS
from edgecache.config import Settings
from edgecache.ranges import ByteRange, MultipleRanges, RangeNotSatisfiable, parse_range
from edgecache.server import make_runner
from edgecache.throttle import LINES_PER_PERIOD
from tests.conftest import EdgecacheFactory, MiB
from tests.fakeglance import FakeImage
from tests.reliability.conftest import Reporter
from tests.reliability.helpers import (
    Edge,
    RobustGlance,
    download,
    exchange,
    request_bytes,
    tree_snapshot,
)

CACHE_LAYOUT = {
    "index.sqlite",
    "index.sqlite-wal",
    "index.sqlite-shm",
    "blobs",
    "incoming",
    "quarantine",
    "token-hash.key",
}
BAD_RANGES = [
    "bytes=0-0", "bytes=0-", "bytes=-1", "bytes=-0", "bytes=5-3", "bytes=0-1,2-3", "bytes=",
    "bytes=-", "bytes=abc", "bytes=1-2-3", "bytes=99999999999999999999-",
    "bytes=-99999999999999999999",
    "bytes=9223372036854775807-", "bytes=18446744073709551616-1", "bytes=-9223372036854775808",
    "items=0-1", "bytes = 0 - 1", "bytes=0-1 ", "bytes=\u0663-\u0665", "bytes=0x10-", "bytes=1e3-",
    "bytes=+1-", "bytes=-+1", "bytes=0-1;x", " ", "bytes=0-1\t", "bytes=0-1,", ",", "bytes=--1",
    "bytes=\U0001d7d9-\U0001d7da", "BYTES=0-1", "bytes=0-1,0-1,0-1,0-1", "bytes=" + "9" * 5000,
    "bytes=1-0", "bytes=-" + "1" * 19, "bytes=" + "0" * 30 + "1-", "\u00e9", "bytes=0-\x7f",
]  # fmt: skip
SEGMENTS = [
    "v2", "images", "file", "members", "tags", "schemas", "image", "cache", "edgecache",
    "admin", "status", "verify", "pin", "metrics", "healthz", "versions", "..", ".", "%2e%2e",
    "%2E%2E", ".%2e", "%2e%2e%2f", "..%2f", "%2f", "%5c", "..\\", "%00", "%ff", "%c0%af", "%25",
    "~", "", ";", ";x=1", "canary", "secret", "%2e%2e%2f%2e%2e%2fcanary%2fsecret", "blobs",
    "incoming", "index.sqlite", "token-hash.key", "*", "%u2215", "\u00e9", "<cached>",
    "<private>", "<uuid>", "<bad-uuid>", "<long>", "<nonascii>",
]  # fmt: skip


@dataclass(repr=False)
class Hostile:
    edge: Edge
    port: int
    glance: RobustGlance
    token: str
    cached: FakeImage
    private: FakeImage
    cache_dir: Path
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    tried: int = 0

    def __repr__(self) -> str:
        return f"Hostile(port={self.port}, cached={self.cached.id})"


@pytest.fixture
async def hostile(
    glance: RobustGlance,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
    tmp_path: Path,
    figures: Reporter,
) -> AsyncIterator[Hostile]:
    """edgecache with one image cached, a canary dir beside the cache, and afterwards: the
    daemon still serves, nothing outside the cache dir changed, the cache dir holds only its
    own layout."""
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "secret").write_bytes(os.urandom(64))
    (tmp_path / "secret").write_bytes(os.urandom(64))
    token = glance.add_project("p1")
    glance.add_project("p2")
    cached = glance.add_image(os.urandom(MiB + 17), owner="p1")
    private = glance.add_image(os.urandom(1000), owner="p2")
    edge = await make_edgecache()
    url = str(edge.make_url(f"/v2/images/{cached.id}/file"))
    assert (await download(edge.session, url, cached.data, {"X-Auth-Token": token})).kind == "exact"
    outside = tree_snapshot(tmp_path, exclude=[cache_dir])
    repo = sorted(os.listdir("."))
    assert edge.server.port is not None
    state = Hostile(edge, edge.server.port, glance, token, cached, private, cache_dir)
    yield state
    figures.add("bad_inputs", state.tried)
    figures.add("bad_input_5xx", len(state.server_errors))
    if state.tried >= 10 or state.server_errors:
        figures.note(
            f"{state.tried} hostile requests: statuses {dict(sorted(state.statuses.items()))}; "
            f"5xx {len(state.server_errors)}; fake Glance slips {dict(glance.slips)}, its own 5xx "
            f"{glance.answered_5xx}"
            + (f"; first 5xx: {state.server_errors[0]}" if state.server_errors else "")
        )
    hit = await download(edge.session, url, cached.data, {"X-Auth-Token": token})
    assert (hit.kind, hit.source) == ("exact", "cache"), "edgecache stopped serving"
    changed = _diff(outside, tree_snapshot(tmp_path, exclude=[cache_dir]))
    strays = sorted(set(os.listdir(cache_dir)) - CACHE_LAYOUT - {"admin.sock"})
    blobs = sorted(set(os.listdir(cache_dir / "blobs")) - set(glance.images))
    figures.add("leaks", len(changed) + len(strays) + len(blobs))
    assert not changed, f"files outside the cache dir changed: {changed}"
    assert not strays, f"unexpected files in the cache dir: {strays}"
    assert not blobs, f"unexpected files in blobs/: {blobs}"
    assert sorted(os.listdir(".")) == repo, "files appeared in the working directory"


def _diff(before: Mapping[str, object], after: Mapping[str, object]) -> list[str]:
    return sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))


async def judge(state: Hostile, request: bytes, label: str) -> int | None:
    state.tried += 1
    status, answer = await exchange(state.port, request)
    state.statuses[status or 0] += 1
    if status is not None and status >= 500:
        state.server_errors.append(f"{label} -> {answer[:160]!r}")
    return status


def _segment(rng: random.Random, state: Hostile) -> str:
    choice = rng.choice(SEGMENTS)
    if choice == "<cached>":
        return state.cached.id
    if choice == "<private>":
        return state.private.id
    if choice == "<uuid>":
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if choice == "<bad-uuid>":
        good = state.cached.id
        return rng.choice(
            [
                good[:-1] + "g",
                good[:-1],
                good + "0",
                good.replace("-", ""),
                good.upper(),
                good.replace("-", "%2d"),
                good + "%00",
                good[:8] + "--" + good[9:],
                "0" * 36,
                "-" * 36,
            ]
        )
    if choice == "<long>":
        return "a" * rng.choice((300, 3000, 9000))
    if choice == "<nonascii>":
        return quote(rng.choice(["\u00e9\u00e8", "\u2215", "\U0001f600", "\u0000", "\ufeff"]))
    return choice


def fuzz_request(rng: random.Random, state: Hostile) -> tuple[bytes, str]:
    method = rng.choice(["GET"] * 6 + ["HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "FOO"])
    if rng.random() < 0.5:
        segments = ["v2", "images", _segment(rng, state), rng.choice(["file", "file", "members"])]
    else:
        segments = [_segment(rng, state) for _ in range(rng.randint(0, 6))]
    path = "/" + "/".join(segments)
    if rng.random() < 0.3:
        params = [
            f"{rng.choice(['limit', 'marker', 'name', 'sort', 'visibility', 'x', '%zz', ''])}="
            f"{rng.choice(['-1', '99999999999999999999', 'abc', '%00', '%zz', '..%2f', 'a' * 500])}"
            for _ in range(rng.randint(1, 4))
        ]
        path += "?" + rng.choice(["&", "&&", ";"]).join(params)
    target: str | bytes = path
    if rng.random() < 0.03:
        target = path.encode() + bytes([rng.randrange(0x80, 0x100)])
    headers: list[tuple[str | bytes, str | bytes]] = []
    tokens: list[str | bytes] = [
        state.token,
        "garbage",
        "",
        "x" * 7000,
        "t\u00f6k\u00e9n",
        "a b c",
        b"tok\xff",  # not UTF-8
    ]
    if rng.random() < 0.8:
        headers.append(("X-Auth-Token", rng.choice(tokens)))
    if rng.random() < 0.5:
        headers.append(("Range", rng.choice(BAD_RANGES)))
    if rng.random() < 0.15:
        headers.append(("Content-Range", rng.choice(["bytes 0-1/2", "garbage", "bytes */*"])))
    if rng.random() < 0.2:
        accept = ["*/*;q=x", "application/json;q=nan", "text/html;q=-1", "\u00e9/\u00e9", "a" * 999]
        headers.append(("Accept", rng.choice(accept)))
    if rng.random() < 0.1:
        headers.append(("X-Openstack-Request-Id", rng.choice(["req-" + "a" * 6000, "\u00e9", ""])))
    if rng.random() < 0.05:
        headers += [(f"X-Junk-{n}", "v") for n in range(rng.choice((50, 127, 200)))]
    if rng.random() < 0.05:
        headers.append(("X-Huge", "h" * rng.choice((8000, 20000, 70000))))
    if rng.random() < 0.05:
        headers.append(("Connection", rng.choice(["X-Auth-Token", "close, Range", "keep-alive"])))
    if rng.random() < 0.05:
        headers.append(("X-Roles", "admin"))
        headers.append(("X-Identity-Status", "Confirmed"))
    body = b""
    if method in ("PUT", "POST", "PATCH") and rng.random() < 0.5:
        body = os.urandom(rng.choice((1, 100, 70000)))
    label = f"{method} {target!r:.120} {headers!r:.200}"
    return request_bytes(method, target, headers, body), label


async def test_bounded_fuzzing_loop(hostile: Hostile, seed: int, figures: Reporter) -> None:
    rng = random.Random(seed)
    requests = [fuzz_request(rng, hostile) for _ in range(1500)]
    gate = asyncio.Semaphore(16)

    async def one(request: bytes, label: str) -> None:
        async with gate:
            await judge(hostile, request, label)

    await asyncio.gather(*(one(request, label) for request, label in requests))
    # Several different causes may hide behind one: say which inputs drew a 5xx.
    causes = Counter(_cause(error) for error in hostile.server_errors)
    figures.note(f"fuzz seed {seed}: 5xx by cause {dict(causes)}")
    assert not hostile.server_errors, f"{len(hostile.server_errors)} 5xx; causes {dict(causes)}"


def _cause(error: str) -> str:
    if "'X-Auth-Token', b'tok\\xff'" in error:
        return "an X-Auth-Token that is not UTF-8"
    return error[:80]


async def test_a_token_that_is_not_utf8_is_refused_not_a_500(hostile: Hostile) -> None:
    """Header bytes that are not UTF-8 reach handlers as surrogate escapes; hashing the token
    must not blow up (edgecache.auth.TokenHasher.hash encodes it strictly)."""
    statuses = []
    for target in (
        f"/v2/images/{hostile.cached.id}/file",
        f"/v2/images/{hostile.cached.id}",
        "/v2/images",
        "/v2/cache",
    ):
        for token in (b"\xff\xfe", b"abc\xe9", "t\u00f6k\u00e9n".encode()):
            request = request_bytes("GET", target, [("X-Auth-Token", token)])
            statuses.append(await judge(hostile, request, f"GET {target} token {token!r}"))
    assert not hostile.server_errors, hostile.server_errors
    assert all(status in (400, 401) for status in statuses), statuses


@pytest.mark.parametrize("header", BAD_RANGES)
async def test_bad_range_values(hostile: Hostile, header: str) -> None:
    """Each bad Range on a cached image: Glance's answers (400 several ranges, 416 garbage) or
    a correct 206/200; never a 5xx, and a 206 carries exactly the bytes it says."""
    target = f"/v2/images/{hostile.cached.id}/file"
    request = request_bytes("GET", target, [("X-Auth-Token", hostile.token), ("Range", header)])
    status = await judge(hostile, request, f"Range {header!r:.60}")
    assert status in (200, 206, 400, 416), status
    if status == 206:
        _, answer = await exchange(hostile.port, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        match = re.search(rb"Content-Range: bytes (\d+)-(\d+)/(\d+)", head)
        assert match, head
        start, end = int(match.group(1)), int(match.group(2))
        assert body == hostile.cached.data[start : end + 1]


async def test_range_with_non_ascii_digits_is_not_a_range(
    hostile: Hostile, figures: Reporter
) -> None:
    """`\\d` in edgecache.ranges matches any Unicode digit: 'bytes=\u0663-' is served as
    bytes 3- where Glance (latin-1 WSGI headers, ASCII digits) has no such range."""
    target = f"/v2/images/{hostile.cached.id}/file"
    answers = {}
    for header in ("bytes=\u0663-", "bytes=0-\u0665", "bytes=\U0001d7d9-"):
        request = request_bytes("GET", target, [("X-Auth-Token", hostile.token), ("Range", header)])
        answers[header] = await judge(hostile, request, f"Range {header!r}")
    figures.note(f"Ranges with non-ASCII digits answered {answers}")
    assert set(answers.values()) == {416}, answers


URL_SAFE = "/%;=?&.~-_"
path_segments = st.one_of(
    st.sampled_from([s for s in SEGMENTS if not s.startswith("<")]),
    st.text(max_size=24).map(lambda text: quote(text, safe=URL_SAFE)),
    st.binary(max_size=12).map(lambda data: quote(data, safe=URL_SAFE)),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from(["/", "/v2/images/", "/edgecache/admin/", "/v2/cache/", "/v2/schemas/"]),
    segments=st.lists(path_segments, max_size=6),
    method=st.sampled_from(["GET", "HEAD", "DELETE", "PUT", "POST"]),
)
async def test_property_no_path_draws_a_5xx(
    hostile: Hostile, prefix: str, segments: list[str], method: str
) -> None:
    target = prefix + "/".join(segments)
    request = request_bytes(method, target, [("X-Auth-Token", hostile.token)])
    status = await judge(hostile, request, f"{method} {target!r}")
    assert status is not None, target
    assert status < 500, (target, status)
    if target.startswith("/edgecache/admin"):
        assert not 200 <= status < 300, (target, status)


bound = st.one_of(st.just(""), st.integers(-(2**70), 2**70).map(str))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    range_header=st.one_of(
        st.sampled_from(BAD_RANGES),
        st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=40),
        st.builds(
            lambda unit, first, last: f"{unit}={first}-{last}",
            st.sampled_from(["bytes", "Bytes", "bits", ""]),
            bound,
            bound,
        ),
    ),
    cached=st.booleans(),
)
async def test_property_no_range_draws_a_5xx(
    hostile: Hostile, range_header: str, cached: bool
) -> None:
    image = hostile.cached if cached else hostile.glance.add_image(b"x" * 4000, owner="p1")
    request = request_bytes(
        "GET",
        f"/v2/images/{image.id}/file",
        [("X-Auth-Token", hostile.token), ("Range", range_header)],
    )
    status = await judge(hostile, request, f"Range {range_header!r}")
    assert status in (200, 206, 400, 416), (range_header, status)


header_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,30}", fullmatch=True)
header_values = st.binary(max_size=300).map(
    lambda data: data.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    headers=st.lists(
        st.tuples(
            st.one_of(
                header_names,
                st.sampled_from(["Range", "Accept", "X-Openstack-Request-Id", "Content-Range"]),
            ),
            header_values,
        ),
        max_size=12,
    ),
    target=st.sampled_from(["file", "record", "list", "members", "cache", "versions"]),
    query=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=24)), max_size=4),
)
async def test_property_no_headers_or_query_draw_a_5xx(
    hostile: Hostile,
    headers: list[tuple[str, bytes]],
    target: str,
    query: list[tuple[str, str]],
) -> None:
    image_id = hostile.cached.id
    path = {
        "file": f"/v2/images/{image_id}/file",
        "record": f"/v2/images/{image_id}",
        "list": "/v2/images",
        "members": f"/v2/images/{image_id}/members",
        "cache": "/v2/cache",
        "versions": "/versions",
    }[target]
    if query:
        path += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    wanted: list[tuple[str | bytes, str | bytes]] = [("X-Auth-Token", hostile.token)]
    wanted += [(name, value) for name, value in headers if name.lower() not in _FRAMING]
    status = await judge(hostile, request_bytes("GET", path, wanted), f"GET {path!r} {headers!r}")
    assert status is not None, (path, headers)
    assert status < 500, (path, headers, status)


_FRAMING = {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade"}


@settings(
    max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=st.one_of(
        st.sampled_from(BAD_RANGES),
        st.text(max_size=40),
        st.builds(
            lambda first, last: f"bytes={first}-{last}",
            st.one_of(st.just(""), st.integers(0, 2**66).map(str)),
            st.one_of(st.just(""), st.integers(0, 2**66).map(str)),
        ),
    ),
    size=st.integers(0, 2**40),
)
def test_property_parse_range_stays_inside_the_image(
    header: str, size: int, figures: Reporter
) -> None:
    figures.add("parse_range examples")
    try:
        result = parse_range(header, size)
    except (MultipleRanges, RangeNotSatisfiable):
        return
    assert isinstance(result, ByteRange)
    assert 0 <= result.start < result.end <= size


@settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), size=st.integers(1, 2**40))
def test_property_parse_range_is_exact_for_valid_ranges(
    data: st.DataObject, size: int, figures: Reporter
) -> None:
    figures.add("parse_range examples")
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.one_of(st.none(), st.integers(first, 2**62)))
    result = parse_range(f"bytes={first}-{'' if last is None else last}", size)
    assert result == ByteRange(first, size if last is None else min(last + 1, size))


MALFORMED = [
    b"FOO BAR\r\n\r\n",  # not a method
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",  # TLS hello
    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n",  # a space in a header name
    b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",  # a header line too long
    b"GET /\x00 HTTP/1.1\r\n\r\n",  # a NUL in the target
    b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",  # a length that is not a number
    b"GET / HTTP/9.9\r\n\r\n",  # no such version
]


async def test_a_flood_of_malformed_requests_is_counted_and_logged_at_a_bounded_rate(
    glance_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, figures: Reporter
) -> None:
    """The daemon's own listener (server.make_runner): aiohttp answers requests it cannot
    parse with 400 and, left alone, logs each with a traceback at ERROR. Here each is counted
    in edgecache_malformed_requests_total, logged as one line without a traceback, and a flood
    writes at most LINES_PER_PERIOD lines in a period; real requests still get answers."""
    settings = Settings(upstream=glance_url, cache_dir=tmp_path / "cache")
    app = create_app(settings)
    runner = make_runner(app, settings)
    await runner.setup()
    flood = MALFORMED * 30
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        caplog.set_level(logging.DEBUG)
        statuses = Counter([(await exchange(port, request))[0] for request in flood])
        healthy, _ = await exchange(port, request_bytes("GET", "/healthz", []))
        counted = app[METRICS].registry.get_sample_value("edgecache_malformed_requests_total")
    finally:
        await runner.cleanup()
    figures.note(f"{len(flood)} malformed requests: statuses {dict(statuses)}")
    assert statuses == Counter({400: len(flood)})
    assert healthy == 200
    assert counted == len(flood)
    tracebacks = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not tracebacks, tracebacks[0].getMessage()
    assert not [r for r in caplog.records if r.name == "aiohttp.server"]
    lines = [r.getMessage() for r in caplog.records if r.name == "edgecache.malformed"]
    assert len(lines) == LINES_PER_PERIOD
    assert all(line.startswith("answered 400 to a request from 127.0.0.1") for line in lines)
    assert all("\n" not in line and "b'" not in line for line in lines), lines
