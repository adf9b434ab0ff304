"""Hashing of image bytes: xxh3 per fixed-size chunk, Glance's own digests over the whole."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import xxhash

from edgecache.images import SUPPORTED_HASH_ALGOS, ImageRecord

CHUNK_DIGEST_SIZE = 16  # xxh3_128
READ_SLICE = 1 << 20  # re-hashing reads this much at a time


def file_chunk_digest(fd: int, start: int, length: int) -> bytes | None:
    """xxh3 of `length` bytes of an open file at `start`; None if they cannot all be read.

    Read into a buffer rather than mapped: a copy that shrank, or a disk that fails, must be
    an error to report, not a SIGBUS that kills the daemon.
    """
    hasher = xxhash.xxh3_128()
    buffer = memoryview(bytearray(min(length, READ_SLICE) or 1))
    done = 0
    try:
        while done < length:
            got = os.preadv(fd, [buffer[: min(len(buffer), length - done)]], start + done)
            if got <= 0:
                return None
            hasher.update(buffer[:got])
            done += got
    except OSError:
        return None
    return hasher.digest()


class ChunkHasher:
    """Splits a byte stream into `chunk_size` chunks and records each chunk's xxh3 digest."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self._current = xxhash.xxh3_128()
        self._filled = 0
        self._digests = bytearray()

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.chunk_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.chunk_size:
                self._close_chunk()

    def _close_chunk(self) -> None:
        self._digests += self._current.digest()
        self._current = xxhash.xxh3_128()
        self._filled = 0

    def finish(self) -> bytes:
        """Packed digests of every chunk, the last one possibly short."""
        if self._filled:
            self._close_chunk()
        return bytes(self._digests)


class ImageDigest:
    """Glance's `os_hash_value` and md5 `checksum` computed over a whole image.

    md5 can be left out when the (stronger) os_hash_value is there to check (`with_md5`); it
    costs about as much CPU as everything else a fill does. It is always checked when it is
    the only checksum Glance published.
    """

    def __init__(self, image: ImageRecord, with_md5: bool) -> None:
        self._image = image
        usable = image.hash_value and image.hash_algo in SUPPORTED_HASH_ALGOS
        self._multihash = hashlib.new(image.hash_algo) if usable and image.hash_algo else None
        wants_md5 = image.checksum and (with_md5 or self._multihash is None)
        self._md5 = hashlib.md5(usedforsecurity=False) if wants_md5 else None

    def updaters(self) -> list[Callable[[bytes], None]]:
        """One update function per digest, so they can run on different cores at once
        (hashlib releases the GIL); each must still see the pieces in order."""
        return [h.update for h in (self._md5, self._multihash) if h is not None]

    def mismatch(self) -> str | None:
        """None when every digest Glance published matches, else what differs."""
        if self._md5 is None and self._multihash is None:
            return "Glance published no checksum for this image"
        if self._md5 is not None and self._md5.hexdigest() != self._image.checksum:
            return f"md5 {self._md5.hexdigest()} != checksum {self._image.checksum}"
        if self._multihash is not None and self._multihash.hexdigest() != self._image.hash_value:
            return f"{self._image.hash_algo} differs from os_hash_value"
        return None
