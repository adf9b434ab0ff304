"""glibc's allocator thresholds, fixed at start-up (edgecache.allocator)."""

from __future__ import annotations

import platform

import pytest

from edgecache.allocator import keep_large_buffers


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_thresholds() -> None:
    assert keep_large_buffers() is True
