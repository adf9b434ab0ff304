"""Remembered state stays bounded: nothing an unauthenticated caller sends creates a row, a
caller's lists are kept per identity and few, and the index is held under its bound."""

from __future__ import annotations

import json
import time

from aiohttp.test_utils import TestClient

from edgecache.appkeys import CACHE, DECISIONS, DOCUMENTS, METRICS
from edgecache.documents import PER_IDENTITY, SHARED_SCOPE, Document
from edgecache.upkeep import IndexUpkeep
from tests.conftest import EdgecacheFactory, random_bytes
from tests.fakeglance import FakeGlance

MiB = 1 << 20


async def rows(client: TestClient) -> dict[str, int]:
    db = client.server.app[CACHE].index.database
    tables = [
        str(r[0]) for r in await db.fetch_all("SELECT name FROM sqlite_master WHERE type='table'")
    ]
    return {t: int((await db.fetch_one(f"SELECT COUNT(*) FROM {t}") or [0])[0]) for t in tables}


async def test_nothing_an_unauthenticated_caller_sends_creates_a_row(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    image = glance.add_image(random_bytes(1000), owner="p1", visibility="public")
    for path in ("/versions", "/"):  # the documents every client reads: one row each
        async with edgecache.get(path):
            pass
    before = await rows(edgecache)
    for n in range(300):  # 2,400 requests
        for path, token in (
            (f"/versions?probe={n}", None),
            (f"/?probe={n}", None),
            (f"/versions?probe={n}", f"made-up-{n}"),
            (f"/v2/images?probe={n}", None),
            (f"/v2/images?probe={n}", f"made-up-{n}"),
            (f"/v2/images/{image.id}?probe={n}", f"made-up-{n}"),
            (f"/v2/images/{image.id}/file", f"made-up-{n}"),
            (f"/v2/schemas/image?probe={n}", None),
        ):
            async with edgecache.get(path, headers={"X-Auth-Token": token} if token else {}):
                pass
    assert await rows(edgecache) == before


async def test_a_callers_lists_are_kept_per_identity_and_few(
    glance: FakeGlance, edgecache: TestClient
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(1000), owner="p1")
    for n in range(3 * PER_IDENTITY):
        async with edgecache.get(f"/v2/images?limit={n + 1}", headers={"X-Auth-Token": token}):
            pass
    for n in range(20):  # a record's query selects nothing: kept once, per path
        async with edgecache.get(f"/v2/images/{image.id}?n={n}", headers={"X-Auth-Token": token}):
            pass
    db = edgecache.server.app[CACHE].index.database
    per_caller = await db.fetch_all("SELECT path FROM documents WHERE scope != ?", (SHARED_SCOPE,))
    assert len(per_caller) == PER_IDENTITY
    assert {str(row[0]) for row in per_caller} == {
        f"/v2/images?limit={n + 1}" for n in range(2 * PER_IDENTITY, 3 * PER_IDENTITY)
    }  # the newest
    records = await db.fetch_all(
        "SELECT path FROM documents WHERE image_id = ? AND scope = ?", (image.id, SHARED_SCOPE)
    )
    assert [str(row[0]) for row in records] == [f"/v2/images/{image.id}"]


async def test_the_index_is_held_under_its_bound_oldest_first_boot_documents_kept(
    make_edgecache: EdgecacheFactory,
) -> None:
    bound = 2 * MiB
    edgecache = await make_edgecache(index_max_size=bound)
    async with edgecache.get("/versions"):
        pass
    index = edgecache.server.app[CACHE].index
    documents, decisions = edgecache.server.app[DOCUMENTS], edgecache.server.app[DECISIONS]
    now = time.time()
    for n in range(2000):  # about 8 MiB of remembered lists of 400 identities
        body = json.dumps({"images": [{"id": str(n), "pad": "x" * 4000}]}).encode()
        document = Document(200, "application/json", body, now - 2000 + n)
        await documents.put(f"tk:{n % 400}", f"/v2/images?n={n}", document)
    upkeep = IndexUpkeep(
        db=index.database,
        documents=documents,
        decisions=decisions,
        metrics=edgecache.server.app[METRICS],
        max_bytes=bound,
        document_ttl=3600,
    )
    assert await index.database.used_bytes() > bound
    await upkeep.once()
    assert await index.database.used_bytes() <= bound
    assert await documents.get(SHARED_SCOPE, "/versions") is not None
    kept = await index.database.fetch_all("SELECT fetched_at FROM documents WHERE scope != '*'")
    dropped_oldest = min(float(row[0]) for row in kept) > now - 2000 + 100
    assert kept
    assert dropped_oldest
    metrics = edgecache.server.app[METRICS].registry
    assert metrics.get_sample_value("edgecache_index_bytes") <= bound
    assert metrics.get_sample_value("edgecache_index_rows_dropped_total", {"reason": "size"}) > 0


async def test_documents_nobody_had_for_the_decision_ttl_are_purged(
    make_edgecache: EdgecacheFactory,
) -> None:
    edgecache = await make_edgecache(decision_ttl=600)
    async with edgecache.get("/versions"):
        pass
    index = edgecache.server.app[CACHE].index
    documents, decisions = edgecache.server.app[DOCUMENTS], edgecache.server.app[DECISIONS]
    old = Document(200, "application/json", b"{}", time.time() - 601)
    await documents.put("tk:someone", "/v2/images?old", old)
    await documents.put(SHARED_SCOPE, "/v2/images/x", old, "x")
    await documents.put(SHARED_SCOPE, "/v2/schemas/image", old)
    upkeep = IndexUpkeep(
        db=index.database,
        documents=documents,
        decisions=decisions,
        metrics=edgecache.server.app[METRICS],
        max_bytes=256 * MiB,
        document_ttl=600,
    )
    await upkeep.once()
    assert await documents.get("tk:someone", "/v2/images?old") is None
    assert await documents.get(SHARED_SCOPE, "/v2/images/x") is None
    assert await documents.get(SHARED_SCOPE, "/v2/schemas/image") is not None
    assert await documents.get(SHARED_SCOPE, "/versions") is not None
