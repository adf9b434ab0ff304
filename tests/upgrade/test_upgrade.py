"""Upgrades keep the cache: copies, remembered records and decisions (issue 20).

Each cache here was made by an earlier release of main, running its own code
(make_fixtures.py), not by today's. Today's daemon opens it with the uplink already cut: the
token that booted the images before the upgrade boots them again from the cache; once the
uplink is back they are hits, with nothing taken from the region.
"""

from __future__ import annotations

import hashlib
import sqlite3
import tarfile
import time
from pathlib import Path

import pytest

from edgecache.database.schema import IndexFromNewerRelease
from tests.conftest import EdgecacheFactory, UpstreamServer, go_online
from tests.fakeglance import FakeGlance, service_credentials
from tests.upgrade.releases import BOOT_TOKEN, RELEASES, Release, glance_of_the_fixtures


@pytest.fixture
def glance() -> FakeGlance:
    return glance_of_the_fixtures()


def unpack(release: Release, cache_dir: Path) -> None:
    """The release's cache as if it had stopped just now: every time it wrote moves forward
    by how long ago it was made (its tokens would have expired since)."""
    with tarfile.open(release.archive) as archive:
        archive.extractall(cache_dir.parent, filter="data")
    index = sqlite3.connect(cache_dir / "index.sqlite")
    with index:
        (made_at,) = index.execute("SELECT MAX(fetched_at) FROM documents").fetchone()
        shift = time.time() - made_at
        tables = [
            row[0] for row in index.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            columns = [row[1] for row in index.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                if column.endswith("_at") or column == "last_access":
                    index.execute(f"UPDATE {table} SET {column} = {column} + ?", (shift,))
    index.close()


@pytest.mark.parametrize("release", RELEASES, ids=lambda release: release.name)
async def test_a_cache_of_an_earlier_release_boots_offline_then_hits(
    release: Release,
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    make_edgecache: EdgecacheFactory,
    cache_dir: Path,
) -> None:
    unpack(release, cache_dir)
    await upstream_server.stop()  # the uplink is cut before anyone asks anything
    keystone = service_credentials(upstream_server.url)
    edgecache = await make_edgecache(
        failures_to_offline=1, probe_interval=0.05, **(keystone if release.keystone else {})
    )
    headers = {"X-Auth-Token": BOOT_TOKEN}
    for image in glance.images.values():
        async with edgecache.get(f"/v2/images/{image.id}", headers=headers) as resp:
            assert resp.status == 200, (release.name, image.visibility)
            assert (await resp.json())["id"] == image.id
            assert resp.headers["X-Edgecache-Uplink"] == "down"
        async with edgecache.get(f"/v2/images/{image.id}/file", headers=headers) as resp:
            assert resp.status == 200, (release.name, image.visibility)
            assert await resp.read() == image.data
            assert resp.headers["X-Edgecache-Source"] == "cache"

    await go_online(edgecache, upstream_server)
    for image in glance.images.values():
        async with edgecache.get(f"/v2/images/{image.id}/file", headers=headers) as resp:
            assert resp.status == 200
            assert await resp.read() == image.data
            assert resp.headers["X-Edgecache-Source"] == "cache"
    assert sum(glance.data_requests.values()) == 0  # nothing crossed the WAN again


async def test_a_cache_of_a_newer_release_is_refused_untouched(
    make_edgecache: EdgecacheFactory, cache_dir: Path
) -> None:
    unpack(RELEASES[-1], cache_dir)
    first = await make_edgecache()  # today's release: the index gets its versions
    await first.close()
    index_path = cache_dir / "index.sqlite"
    with sqlite3.connect(index_path) as index:
        index.execute("UPDATE schema_versions SET version = version + 1 WHERE owner = 'blobs'")
    index.close()
    before = hashlib.sha256(index_path.read_bytes()).hexdigest()
    with pytest.raises(IndexFromNewerRelease, match=r"written by a newer release of edgecache"):
        await make_edgecache()
    assert hashlib.sha256(index_path.read_bytes()).hexdigest() == before
