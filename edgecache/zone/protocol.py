"""The sibling endpoint's wire format, shared by the side that asks and the side that answers.

Besides image bytes, a node's holdings (edgecache.holdings): `GET HOLDINGS_PATH` lists them
(JSON), `DELETE HOLDINGS_PATH/<image id>` removes one image (204, 404 if the node has neither
copy nor job, 409 if its copy is being read), `DELETE HOLDINGS_PATH?target=cache|queue` clears
(no target: both); signed like the requests for bytes.

`HEAD|GET ZONE_PREFIX/<image id>/file` on the node's zone listener, with the asking node's
own URL in ASKER_HEADER and the request signed under the zone's secret (TIME_HEADER,
NONCE_HEADER, SIGNATURE_HEADER: edgecache.zone.signing). 200/206 with DEPTH_HEADER
(edgecache.store.source) and COPY_HEADER (stored or filling) when the node has the image or is
filling it, 404 otherwise (the node never goes to the region for it), 403 when the signature
does not hold.
"""

from __future__ import annotations

from edgecache.images import ImageRecord

ZONE_PREFIX = "/zone/v1/images"
HOLDINGS_PATH = "/zone/v1/cache"
TIME_HEADER = "X-Edgecache-Zone-Time"
NONCE_HEADER = "X-Edgecache-Zone-Nonce"
SIGNATURE_HEADER = "X-Edgecache-Zone-Signature"
ASKER_HEADER = "X-Edgecache-Zone-Node"
DEPTH_HEADER = "X-Edgecache-Zone-Depth"
COPY_HEADER = "X-Edgecache-Zone-Copy"
# Which version of the image the asker wants (size and Glance's checksums): a node whose copy
# was made of another version answers 404, rather than bytes that would fail verification.
EXPECT_HEADER = "X-Edgecache-Zone-Expect"
STORED = "stored"
FILLING = "filling"


def image_path(image_id: str) -> str:
    return f"{ZONE_PREFIX}/{image_id}/file"


def version_of(size: int | None, hash_value: str | None, checksum: str | None) -> str:
    """The value of EXPECT_HEADER for one version of an image."""
    return f"{size}:{hash_value or ''}:{checksum or ''}"


def version_of_record(image: ImageRecord) -> str:
    return version_of(image.size, image.hash_value, image.checksum)
