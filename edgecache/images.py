"""The parts of a Glance image record that the cache relies on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_IMAGE_ID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
SUPPORTED_HASH_ALGOS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_512", "md5"})
# Statuses of an image whose data Glance holds (a deactivated image's stays, refused to most).
_WITH_DATA = frozenset({"active", "deactivated"})


def is_image_id(text: str) -> bool:
    """Glance image ids are UUIDs; anything else can never name a cached blob."""
    return bool(_IMAGE_ID.match(text))


@dataclass(frozen=True)
class ImageRecord:
    id: str
    status: str
    size: int | None
    checksum: str | None
    hash_algo: str | None
    hash_value: str | None

    @classmethod
    def from_glance(cls, body: Any) -> ImageRecord:
        """Parse Glance's image JSON; ValueError if it is not a usable image record."""
        if not isinstance(body, dict) or not is_image_id(str(body.get("id", ""))):
            raise ValueError("not a Glance image record")
        size = body.get("size")
        return cls(
            id=str(body["id"]),
            status=str(body.get("status", "")),
            size=size if isinstance(size, int) and size >= 0 else None,
            checksum=body.get("checksum") or None,
            hash_algo=body.get("os_hash_algo") or None,
            hash_value=body.get("os_hash_value") or None,
        )

    @property
    def has_data(self) -> bool:
        """Whether Glance holds bytes for the image (not `queued`, `saving`, `importing`...)."""
        return self.status in _WITH_DATA and self.size is not None

    @property
    def cacheable(self) -> bool:
        """Active, sized, and carrying a checksum we can verify a copy against."""
        has_hash = self.hash_value is not None and self.hash_algo in SUPPORTED_HASH_ALGOS
        return (
            self.status == "active"
            and self.size is not None
            and (has_hash or self.checksum is not None)
        )
