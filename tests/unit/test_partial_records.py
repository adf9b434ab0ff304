"""What a partial fill keeps beside it (edgecache.store.sidecar) and how it is made durable as
it grows (edgecache.store.checkpoints); the kept partials themselves: tests/component."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgecache.images import ImageRecord
from edgecache.store import sidecar
from edgecache.store.checkpoints import Checkpoints
from edgecache.store.sidecar import PartialRecord

MiB = 2**20


def test_a_record_that_cannot_be_read_describes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "image.json"
    image = ImageRecord("0b9a2f7e-aaaa-4000-8000-000000000000", "active", 10, "c", "sha512", "h")
    sidecar.write(path, PartialRecord.of(image))
    assert sidecar.read(path) == PartialRecord.of(image)
    whole = json.loads(path.read_text())
    for broken in (
        "",
        "{",
        json.dumps({**whole, "format": 2}),
        json.dumps({**whole, "durable": 11}),  # more flushed than the image holds
        json.dumps({**whole, "size": "10"}),
        json.dumps({**whole, "extra": 1}),
    ):
        path.write_text(broken)
        assert sidecar.read(path) is None, broken


async def test_checkpoints_flush_the_partial_as_it_grows_and_at_the_end(tmp_path: Path) -> None:
    image = ImageRecord("0b9a2f7e-aaaa-4000-8000-000000000000", "active", 10 * MiB, "c", None, None)
    record_path = tmp_path / "image.json"
    flushed: list[int] = []
    real_fdatasync = os.fdatasync

    def noted_fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        flushed.append(os.fstat(fd).st_size)

    fd = os.open(tmp_path / "image.part", os.O_RDWR | os.O_CREAT, 0o600)
    with ThreadPoolExecutor(1) as executor, pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fdatasync", noted_fdatasync)
        checkpoints = Checkpoints(fd, record_path, PartialRecord.of(image), executor, every=MiB)
        for written in range(256 * 1024, 3 * MiB, 256 * 1024):  # as a fill's writes land
            os.pwrite(fd, bytes(256 * 1024), written - 256 * 1024)
            checkpoints.reached(written)
            await checkpoints.settle()
        assert flushed == [MiB, 2 * MiB]
        assert sidecar.read(record_path) == PartialRecord.of(image).flushed(2 * MiB)
        os.pwrite(fd, bytes(1000), 3 * MiB - 256 * 1024)
        assert await asyncio.get_running_loop().run_in_executor(executor, checkpoints.final) == (
            3 * MiB - 256 * 1024 + 1000
        )
    os.close(fd)
    final = sidecar.read(record_path)
    assert final is not None
    assert final.durable == 3 * MiB - 256 * 1024 + 1000
    assert final.trusted(final.durable + 5) == final.durable + 5  # this boot: the whole file
    after_a_reboot = dataclasses.replace(final, boot="an-earlier-boot")
    assert after_a_reboot.trusted(final.durable + 5) == final.durable
