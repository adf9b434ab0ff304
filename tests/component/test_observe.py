"""The access log line and the request metrics."""

from __future__ import annotations

import json
import logging

import pytest
from aiohttp.test_utils import TestClient

from edgecache.logs import JsonFormatter
from tests.conftest import MiB, random_bytes
from tests.fakeglance import FakeGlance


async def test_one_line_per_request_with_bytes_and_source(
    glance: FakeGlance, edgecache: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgecache.access")
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    headers = {"X-Auth-Token": token, "X-Openstack-Request-Id": "req-test-1"}
    for _ in range(2):
        async with edgecache.get(f"/v2/images/{image.id}/file", headers=headers) as resp:
            await resp.read()
    # The server logs once its handler returns, which can be just after the client has all
    # the bytes; a further request on the same keep-alive connection is handled after that.
    async with edgecache.get("/healthz") as resp:
        await resp.read()
    lines = [r for r in caplog.records if r.name == "edgecache.access" and r.path.endswith("/file")]
    assert [(r.status, r.bytes, r.source) for r in lines] == [  # type: ignore[attr-defined]
        (200, MiB, "fill"),
        (200, MiB, "cache"),
    ]
    assert all(r.request_id == "req-test-1" for r in lines)  # type: ignore[attr-defined]
    assert all(r.route == "/v2/images/{image_id}/file" for r in lines)  # type: ignore[attr-defined]
    assert token not in caplog.text


async def test_request_metrics_by_route(glance: FakeGlance, edgecache: TestClient) -> None:
    token = glance.add_project("p1")
    async with edgecache.get("/v2/images", headers={"X-Auth-Token": token}):
        pass
    async with edgecache.get("/v2/tasks", headers={"X-Auth-Token": token}):
        pass
    metrics = await (await edgecache.get("/metrics")).text()
    assert 'edgecache_requests_total{method="GET",route="/v2/images",status="200"} 1.0' in metrics
    assert 'edgecache_requests_total{method="GET",route="passthrough",status="404"} 1.0' in metrics
    assert 'edgecache_metadata_requests_total{result="upstream"} 1.0' in metrics
    assert "edgecache_request_duration_seconds_bucket" in metrics


def test_json_lines_carry_the_access_fields() -> None:
    record = logging.LogRecord("edgecache.access", logging.INFO, __file__, 1, "x %s", ("y",), None)
    record.__dict__.update({"request_id": "req-1", "status": 200, "bytes": 5, "source": "cache"})
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "x y"
    assert (line["request_id"], line["status"], line["bytes"], line["source"]) == (
        "req-1",
        200,
        5,
        "cache",
    )
    assert line["level"] == "info"
