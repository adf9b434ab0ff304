"""The record kept next to a partial fill, `incoming/<id>.json`: which image the bytes of
`incoming/<id>.part` are the beginning of, and how many of them are known to be on disk.

A partial is resumed by a later run only if its record still describes the image Glance
publishes (same size and checksums). The chunk digests and Glance's digests of the bytes
kept are not recorded: a resumed fill reads the kept bytes back and hashes them again, so
neither a hasher's state nor `chunk_size` has to survive the restart.

Bytes acknowledged by `pwrite` are in the page cache, not necessarily on the disk: a process
that dies (kill -9) loses none of them, a machine that stops (power cut, kernel crash) may lose
any that were not flushed. So the record says which boot of the machine wrote the partial
(`/proc/sys/kernel/random/boot_id`) and how far it was flushed (`durable`, by the fill's
checkpoints): in the same boot the whole file is trusted, after a reboot only its first
`durable` bytes. Either way the final verification against Glance's checksum decides.

A record is written whole or not at all (a temporary file, renamed over the old one; flushed
first once it names flushed bytes), and one that cannot be read, or is of another format,
describes nothing: its partial is discarded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgecache.images import ImageRecord

FORMAT = 1
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class PartialRecord:
    image_id: str
    size: int
    checksum: str | None
    hash_algo: str | None
    hash_value: str | None
    durable: int  # the first `durable` bytes were flushed to disk (fdatasync)
    boot: str  # the boot of the machine that last wrote the partial ("" if unknown)

    @classmethod
    def of(cls, image: ImageRecord) -> PartialRecord:
        """The record of a fill starting now: nothing flushed yet."""
        assert image.size is not None
        return cls(
            image_id=image.id,
            size=image.size,
            checksum=image.checksum,
            hash_algo=image.hash_algo,
            hash_value=image.hash_value,
            durable=0,
            boot=current_boot(),
        )

    def describes(self, image: ImageRecord) -> bool:
        """Whether the partial holds the beginning of `image` as Glance publishes it now."""
        return (self.image_id, self.size, self.checksum, self.hash_algo, self.hash_value) == (
            image.id,
            image.size,
            image.checksum,
            image.hash_algo,
            image.hash_value,
        )

    def flushed(self, durable: int) -> PartialRecord:
        """This record once the first `durable` bytes are on disk, in this boot."""
        return replace(self, durable=durable, boot=current_boot())

    def trusted(self, length: int) -> int:
        """How many of the `length` bytes the partial file holds can be resumed from."""
        if self.boot and self.boot == current_boot():
            return length
        return min(length, self.durable)


def current_boot() -> str:
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""


def write(path: Path, record: PartialRecord) -> None:
    """Replace the record at `path` with `record`, whole, and on disk before it replaces the
    old one (blocking). Without a flushed checkpoint (`durable` 0) the record is not flushed:
    in the same boot it is read as written, and after a reboot it would say to keep nothing."""
    staging = path.with_name(path.name + ".tmp")
    with staging.open("w") as handle:
        json.dump({"format": FORMAT, **asdict(record)}, handle)
        if record.durable:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(staging, path)


def read(path: Path) -> PartialRecord | None:
    """The record at `path`; None if there is none or it cannot be used (blocking)."""
    try:
        document = json.loads(path.read_text())
        if document.pop("format") != FORMAT:
            return None
        record = PartialRecord(**document)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    numbers = (record.size, record.durable)
    if not all(type(n) is int and n >= 0 for n in numbers) or record.durable > record.size:
        return None
    return record
