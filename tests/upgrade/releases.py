"""The caches earlier releases left behind, as the upgrade tests find them (tests/upgrade).

Each fixture under `caches/` is a cache directory made by the release it is named after (not by
today's code): `make_fixtures.py` checks that release out, runs its daemon against the fake
Glance below and archives what it left. The images, tokens and projects are fixed here, so the
test can start a fake Glance that knows the same ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tests.fakeglance import FakeGlance, FakeImage

CACHES = Path(__file__).parent / "caches"
BOOT_TOKEN = "token-p1-booted-before-the-upgrade"
PROJECT = "p1"


@dataclass(frozen=True)
class Release:
    name: str  # the fixture's file name: caches/<name>.tar.gz
    commit: str  # the last commit of that day on main
    keystone: bool  # whether the daemon ran with [keystone] service credentials

    @property
    def archive(self) -> Path:
        return CACHES / f"{self.name}.tar.gz"


RELEASES = (
    Release("main-2026-11-24", "b695b1a8ee0d6cb8abbdaad046df70251fbf4c78", keystone=False),
    Release("main-2026-12-01", "7258e6f590830e29cf736dbfdb2fcf2877b8a4b9", keystone=True),
)


def images() -> list[FakeImage]:
    """The two images the token booted before the upgrade: one private, one public."""
    return [
        FakeImage(
            id=f"00000000-0000-4000-8000-00000000000{n}",
            data=hashlib.sha512(f"image {n}".encode()).digest() * 2048,  # 128 KiB
            owner=PROJECT,
            visibility=visibility,
        )
        for n, visibility in ((1, "private"), (2, "public"))
    ]


def glance_of_the_fixtures() -> FakeGlance:
    """A fake Glance that knows the fixtures' images and the token that booted them."""
    glance = FakeGlance()
    glance.tokens[BOOT_TOKEN] = PROJECT
    for image in images():
        glance.images[image.id] = image
    return glance
