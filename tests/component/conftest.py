"""Fixtures of the component tier beyond those of tests/conftest.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import SpawnEdgecache, UpstreamServer
from tests.zonekit import Zone, running_zone


@pytest.fixture
async def zone(
    upstream_server: UpstreamServer, spawn_edgecache: SpawnEdgecache, tmp_path: Path
) -> AsyncIterator[Zone]:
    """Three edgecache nodes behind HAProxy with config/haproxy.cfg as shipped."""
    async with running_zone(upstream_server, spawn_edgecache, tmp_path) as zone:
        yield zone
