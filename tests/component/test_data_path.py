"""The data path against the fake Glance: fills, hits, coalescing, verification, resume."""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import FakeGlance, FakeImage, is_download_check

JSON = {"Accept": "application/json"}  # as keystoneauth clients ask for errors


def file_url(image: FakeImage) -> str:
    return f"/v2/images/{image.id}/file"


async def download(client: TestClient, image: FakeImage, token: str, **headers: str) -> bytes:
    async with client.get(file_url(image), headers={"X-Auth-Token": token, **headers}) as resp:
        assert resp.status in (200, 206), await resp.text()
        return await resp.read()


@pytest.fixture
def token(glance: FakeGlance) -> str:
    return glance.add_project("p1")


async def test_cold_then_hit_costs_one_upstream_fetch(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(3 * MiB + 17), owner="p1")
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        assert resp.headers["X-Edgecache-Source"] == "fill"
        assert resp.headers["Content-MD5"] == image.checksum
        assert await resp.read() == image.data
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        assert resp.headers["X-Edgecache-Source"] == "cache"
        assert resp.headers["Content-Length"] == str(len(image.data))
        assert await resp.read() == image.data
    assert glance.data_requests[image.id] == 1
    [entry] = await edgecache.server.app[CACHE].index.all()
    assert entry.hits == 1
    assert len(entry.chunk_digests) == 16 * 13  # 3 MiB + 17 bytes in 256 KiB chunks


async def test_concurrent_cold_readers_share_one_fetch_and_stream_early(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(2 * MiB), owner="p1")
    image.faults.hold_at = MiB  # the upstream stalls half-way until we let it go on
    readers = 8
    first_bytes = [asyncio.Event() for _ in range(readers)]

    async def reader(number: int) -> bytes:
        async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
            assert resp.status == 200
            body = bytearray(await resp.content.readexactly(1024))
            first_bytes[number].set()
            body += await resp.read()
            return bytes(body)

    tasks = [asyncio.create_task(reader(n)) for n in range(readers)]
    await image.faults.reached_hold.wait()
    # Every reader gets bytes while the fill is still stalled: nobody waits for the whole image.
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_bytes)), timeout=10)
    assert not any(task.done() for task in tasks)
    image.faults.release.set()
    bodies = await asyncio.gather(*tasks)
    assert all(body == image.data for body in bodies)
    assert glance.data_requests[image.id] == 1


async def test_last_byte_is_withheld_until_verified(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    image.faults.hold_at = MiB - 1  # everything but the last byte has arrived
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        received = await resp.content.readexactly(MiB - 1)
        await image.faults.reached_hold.wait()
        read_last = asyncio.create_task(resp.content.read())
        done, _ = await asyncio.wait({read_last}, timeout=0.3)
        assert not done, "the transfer completed before the image was verified"
        image.faults.release.set()
        assert received + await read_last == image.data


async def test_checksum_mismatch_is_never_admitted(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    wrong = hashlib.sha512(b"other").hexdigest()
    image = glance.add_image(random_bytes(MiB), owner="p1", hash_value=wrong)
    for attempt in (1, 2):
        async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        assert glance.data_requests[image.id] == attempt
    assert await edgecache.server.app[CACHE].index.get(image.id) is None
    metrics = await (await edgecache.get("/metrics")).text()
    assert "edgecache_verification_failures_total 2.0" in metrics
    assert not list((edgecache.server.app[CACHE].store.incoming_dir).iterdir())


async def test_wrong_size_is_never_admitted(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    real = image.data
    image.data = real[:-10]  # Glance's record (checksums) still describes the full image
    image.checksum, image.hash_value = (
        hashlib.md5(real, usedforsecurity=False).hexdigest(),
        hashlib.sha512(real).hexdigest(),
    )
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert await edgecache.server.app[CACHE].index.get(image.id) is None


async def test_upstream_break_mid_fill_is_resumed_with_range(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(2 * MiB + 5), owner="p1")
    image.faults.cut_at = [700_000, 1_500_000]
    assert await download(edgecache, image, token) == image.data
    assert glance.data_requests[image.id] == 3
    ranges = [
        headers.get("Range")
        for method, path, headers in glance.requests
        if path == file_url(image) and not is_download_check(headers)
    ]
    # Each resume asks for exactly what is missing; bytes buffered at a cut are lost.
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:]]
    assert ranges[0] is None
    assert 0 < offsets[0] <= 700_000
    assert offsets[0] < offsets[1] <= 1_500_000
    assert await edgecache.server.app[CACHE].index.get(image.id) is not None
    metrics = await (await edgecache.get("/metrics")).text()
    assert "edgecache_fill_resumes_total 2.0" in metrics


async def test_resume_when_upstream_ignores_range(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    image.faults.cut_at = [300_000]
    image.faults.ignore_range = True
    assert await download(edgecache, image, token) == image.data
    assert glance.data_requests[image.id] == 2


async def test_fill_gives_up_when_stalled_and_aborts_readers(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, token: str
) -> None:
    edgecache = await make_edgecache(stall_timeout=0.5, failures_to_offline=100)
    image = glance.add_image(random_bytes(MiB), owner="p1")
    image.faults.cut_at = [100_000]
    image.faults.status = [None, *[404] * 50]
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    # The first request broke after some progress; the resume was refused: no more tries.
    assert glance.data_requests[image.id] == 2
    assert await edgecache.server.app[CACHE].index.get(image.id) is None


async def test_short_5xx_burst_is_ridden_out_long_one_aborts(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, token: str
) -> None:
    edgecache = await make_edgecache(stall_timeout=1.0, failures_to_offline=1000)
    short = glance.add_image(random_bytes(MiB), owner="p1")
    short.faults.cut_at = [100_000]
    short.faults.status = [None, 503, 502]
    assert await download(edgecache, short, token) == short.data
    endless = glance.add_image(random_bytes(MiB), owner="p1")
    endless.faults.cut_at = [100_000]
    endless.faults.status = [None, *[503] * 1000]
    async with edgecache.get(file_url(endless), headers={"X-Auth-Token": token}) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert 3 <= glance.data_requests[endless.id] < 100  # retried with backoff, then gave up
    assert await edgecache.server.app[CACHE].index.get(endless.id) is None


@pytest.mark.parametrize(
    ("header", "status", "expected_slice", "content_range"),
    [
        ("bytes=0-0", 206, slice(0, 1), "bytes 0-0/1048576"),
        ("bytes=262140-262150", 206, slice(262140, 262151), "bytes 262140-262150/1048576"),
        ("bytes=1048575-", 206, slice(1048575, None), "bytes 1048575-1048575/1048576"),
        ("bytes=-100", 206, slice(-100, None), "bytes 1048476-1048575/1048576"),
        ("bytes=1000-2000000", 206, slice(1000, None), "bytes 1000-1048575/1048576"),
    ],
)
async def test_ranges_on_a_cached_image(
    glance: FakeGlance,
    edgecache: TestClient,
    token: str,
    header: str,
    status: int,
    expected_slice: slice,
    content_range: str | None,
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    await download(edgecache, image, token)
    async with edgecache.get(
        file_url(image), headers={"X-Auth-Token": token, "Range": header}
    ) as resp:
        assert resp.status == status
        assert resp.headers["X-Edgecache-Source"] == "cache"
        assert resp.headers.get("Content-Range") == content_range
        assert await resp.read() == image.data[expected_slice]
    assert glance.data_requests[image.id] == 1


@pytest.mark.parametrize("header", ["bytes=1048576-", "bytes=20-10", "bytes=-0", "pages=1-2"])
async def test_unsatisfiable_range_is_416(
    glance: FakeGlance, edgecache: TestClient, token: str, header: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    async with edgecache.get(
        file_url(image), headers={**JSON, "X-Auth-Token": token, "Range": header}
    ) as resp:
        assert resp.status == 416
        assert resp.headers["Content-Range"] == f"bytes */{MiB}"
        assert (await resp.json())["code"] == "416 Requested Range Not Satisfiable"


async def test_multiple_ranges_are_a_400_as_in_glance(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with edgecache.get(
        file_url(image), headers={**JSON, "X-Auth-Token": token, "Range": "bytes=0-1,5-6"}
    ) as resp:
        assert resp.status == 400
        assert "multiple ranges" in (await resp.json())["message"]


async def test_range_on_a_cold_image_is_answered_by_glance_while_filling(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(MiB), owner="p1")
    body = await download(edgecache, image, token, Range="bytes=100-199")
    assert body == image.data[100:200]
    fill = edgecache.server.app[CACHE].filling(image.id)
    if fill is not None:
        await fill.wait_verified()
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        assert resp.headers["X-Edgecache-Source"] == "cache"
        assert await resp.read() == image.data


async def test_head_answers_headers_only(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(1000), owner="p1")
    async with edgecache.head(file_url(image), headers={"X-Auth-Token": token}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1000"
        assert resp.headers["Content-MD5"] == image.checksum
    assert glance.data_requests[image.id] == 0


async def test_image_larger_than_the_cache_passes_through(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, token: str
) -> None:
    edgecache = await make_edgecache(max_size=MiB)
    image = glance.add_image(random_bytes(MiB + 1), owner="p1")
    for _ in range(2):
        assert await download(edgecache, image, token) == image.data
    assert glance.data_requests[image.id] == 2
    assert await edgecache.server.app[CACHE].index.get(image.id) is None


async def test_unverifiable_image_is_not_cached(
    glance: FakeGlance, edgecache: TestClient, token: str
) -> None:
    image = glance.add_image(random_bytes(1000), owner="p1")
    image.checksum = ""
    image.hash_value = ""
    for _ in range(2):
        assert await download(edgecache, image, token) == image.data
    assert glance.data_requests[image.id] == 2


@pytest.mark.parametrize(
    ("verify_md5", "admitted"), [(True, False), (False, True)], ids=["md5-on", "md5-off"]
)
async def test_md5_may_be_left_to_the_stronger_os_hash_value(
    glance: FakeGlance, make_edgecache: EdgecacheFactory, verify_md5: bool, admitted: bool
) -> None:
    """With a correct sha512 and a wrong md5 (which no real image has), only verify_md5 tells."""
    edgecache = await make_edgecache(verify_md5=verify_md5)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1", checksum="0" * 32)
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        if admitted:
            assert await resp.read() == image.data
        else:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
    assert (await edgecache.server.app[CACHE].index.get(image.id) is not None) is admitted


async def test_md5_alone_is_always_checked(
    glance: FakeGlance, make_edgecache: EdgecacheFactory
) -> None:
    edgecache = await make_edgecache(verify_md5=False)
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1", checksum="0" * 32, hash_value="")
    async with edgecache.get(file_url(image), headers={"X-Auth-Token": token}) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
