"""An answer to a request edgecache makes on a caller's behalf: Glance's own (fresh or
remembered) or edgecache's refusal in Glance's words (edgecache.refusals)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgecache.glance_errors import GlanceError
from edgecache.images import ImageRecord


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    age: int | None = None  # seconds since Glance said it; None when fresh from Glance
    uplink_down: bool = False  # remembered because Glance cannot be asked
    error: GlanceError | None = None  # edgecache's own refusal, rendered per the caller

    @property
    def recalled(self) -> bool:
        return self.age is not None

    def json(self) -> Any:
        return json.loads(self.body)

    def image(self) -> ImageRecord:
        """The image record this answer carries; ValueError if it is not one."""
        return ImageRecord.from_glance(self.json())
