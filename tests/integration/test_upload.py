"""`glance image-create --file` through edgecache: passed through to Glance, streamed."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from tests.integration.conftest import MiB, World, downloads_settle, glance_as, http, show
from tests.stack.edgecache_daemon import EdgecacheDaemon

UPLOAD_SIZE = 48 * MiB


def _memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, field
    return int(match[1])


def test_image_create_with_file_through_edgecache(
    world: World, edgecache: EdgecacheDaemon, tmp_path: Path
) -> None:
    stack = world.stack
    data = os.urandom(UPLOAD_SIZE)
    source = tmp_path / "upload.raw"
    source.write_bytes(data)
    # Reset the daemon's peak RSS (VmHWM) so that it shows what this upload costs.
    Path(f"/proc/{edgecache.pid}/clear_refs").write_text("5")
    rss_before = _memory_kib(edgecache.pid, "VmRSS")

    created = glance_as(
        stack, world.a, "image-create", "--name", "uploaded-through-edgecache",
        "--file", str(source), "--disk-format", "raw", "--container-format", "bare",
        image_url=edgecache.url,
    )  # fmt: skip
    fields = show(created)
    peak_growth = (_memory_kib(edgecache.pid, "VmHWM") - rss_before) * 1024
    print(f"edgecache's peak RSS grew by {peak_growth / MiB:.1f} MiB during the upload")
    image_id = fields["id"]
    assert fields["status"] == "active"
    assert fields["size"] == str(UPLOAD_SIZE)
    assert fields["checksum"] == hashlib.md5(data).hexdigest()

    record = http(
        "GET", f"{stack.glance_url}/v2/images/{image_id}", stack.admin_token(), expect={200}
    )
    assert record.json()["os_hash_value"] == hashlib.sha512(data).hexdigest()
    uploads = [
        line
        for line in stack.glance_access_log.read_text().splitlines()
        if f'"PUT /v2/images/{image_id}/file ' in line
    ]
    assert len(uploads) == 1, uploads
    assert '" 204 ' in uploads[0], uploads
    assert peak_growth < UPLOAD_SIZE // 2, f"edgecache grew by {peak_growth / MiB:.0f} MiB"

    for attempt in (1, 2):
        out = tmp_path / f"download-{attempt}.raw"
        glance_as(
            stack, world.a, "image-download", "--file", str(out), image_id,
            image_url=edgecache.url,
        )  # fmt: skip
        assert out.read_bytes() == data, attempt
    assert downloads_settle(stack, image_id, 1) == 1
