"""On-disk layout of image copies and the operations that keep it consistent.

    <cache_dir>/incoming/<id>.part   a fill in progress, or one an earlier run left to be
                                     resumed (never served: edgecache.store.partials)
    <cache_dir>/incoming/<id>.json   what that partial is (edgecache.store.sidecar)
    <cache_dir>/blobs/<id>           a verified copy, named in the index
    <cache_dir>/quarantine/<id>.<t>  a copy whose chunk hashes stopped matching at Unix
                                     time t (kept for a while: edgecache.store.quarantine)

Only the steps live here; their order, and who may take them when, is the rule in
`edgecache.store` (carried out by `edgecache.store.transitions`).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from edgecache.store.digests import CHUNK_DIGEST_SIZE, file_chunk_digest
from edgecache.store.index import BlobEntry


class BlobCorrupt(Exception):
    """A stored chunk no longer matches the digest recorded when it was verified."""

    def __init__(self, image_id: str, chunk: int) -> None:
        super().__init__(f"image {image_id}: chunk {chunk} does not match its recorded hash")
        self.image_id = image_id
        self.chunk = chunk


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.incoming_dir = root / "incoming"
        self.quarantine_dir = root / "quarantine"
        self.index_path = root / "index.sqlite"
        self._readers: Counter[str] = Counter()
        # Called with an image's id when its last reader is done (the evictor's hook).
        self.on_last_reader: Callable[[str], None] | None = None

    def make_layout(self) -> None:
        for directory in (self.blobs_dir, self.incoming_dir, self.quarantine_dir):
            directory.mkdir(parents=True, exist_ok=True)

    def stored_size(self, image_id: str) -> int | None:
        """The size of an image's stored file, None if there is none."""
        try:
            return self.blob_path(image_id).stat().st_size
        except FileNotFoundError:
            return None

    def blob_names(self) -> list[str]:
        return [path.name for path in self.blobs_dir.iterdir()]

    def blob_path(self, image_id: str) -> Path:
        return self.blobs_dir / image_id

    def partial_path(self, image_id: str) -> Path:
        return self.incoming_dir / f"{image_id}.part"

    def sidecar_path(self, image_id: str) -> Path:
        return self.incoming_dir / f"{image_id}.json"

    @staticmethod
    def make_durable(fd: int) -> None:
        os.fsync(fd)

    def move_into_place(self, image_id: str) -> None:
        """Rename a finished partial file to its image's copy, durably (blocking)."""
        os.replace(self.partial_path(image_id), self.blob_path(image_id))
        _fsync_dir(self.blobs_dir)
        self.sidecar_path(image_id).unlink(missing_ok=True)  # left by a crash: start-up drops it

    def delete(self, image_id: str) -> None:
        self.blob_path(image_id).unlink(missing_ok=True)

    def delete_partial(self, image_id: str) -> None:
        """Delete a partial file and its record (the record last: a partial without one is
        never resumed)."""
        self.partial_path(image_id).unlink(missing_ok=True)
        self.sidecar_path(image_id).unlink(missing_ok=True)

    @contextlib.contextmanager
    def reading(self, image_id: str) -> Iterator[None]:
        """Mark a blob in use so eviction leaves it alone."""
        self._readers[image_id] += 1
        try:
            yield
        finally:
            self._readers[image_id] -= 1
            if not self._readers[image_id]:
                del self._readers[image_id]
                if self.on_last_reader is not None:
                    self.on_last_reader(image_id)

    def in_use(self, image_id: str) -> bool:
        return self._readers[image_id] > 0


def verify_chunk(fd: int, entry: BlobEntry, chunk: int) -> None:
    """Re-hash one chunk of an open blob; raise BlobCorrupt if it changed (blocking)."""
    start = chunk * entry.chunk_size
    length = min(entry.chunk_size, entry.size - start)
    expected = entry.chunk_digests[chunk * CHUNK_DIGEST_SIZE : (chunk + 1) * CHUNK_DIGEST_SIZE]
    if file_chunk_digest(fd, start, length) != expected:
        raise BlobCorrupt(entry.image_id, chunk)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
