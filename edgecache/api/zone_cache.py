"""Glance's cache API for a zone of nodes: every node's holdings in one listing, an image
queued once per zone, removals from every node.

The caller is authorized by the node it asked, as for a single node (edgecache.api.glance_cache);
the siblings are asked over the zone listener (edgecache.zone.sibling_holdings) and never see
the caller's token.

- The listing is Glance's: `cached_images` (one entry per image, hits added up, the latest
  access, the earliest copy) and `queued_images` (the jobs and fills of every node). Each
  cached entry also carries NODES_FIELD, the nodes that hold a copy (their URLs in [zone]
  peers); glanceclient ignores fields it does not know in these entries (it would print any
  key added beside the two lists as rows of queued images, so none is).
- An image is queued on its owner: the node that already stores it, fills it, or has it
  queued (and can start it), else the node asked. HAProxy hashes `/v2/cache/<id>` apart from
  `/v2/images/<id>`, so the node that will serve the image cannot be told from here; the one
  that has it is the zone's copy, and where nobody has it, the node asked becomes its owner
  (a request for it that HAProxy sends elsewhere takes it from there, not from the region).
  Two requests for the same image at two nodes at the same moment may both queue it; the
  second fill then takes the image from the first node.
- A removal (one image, or Glance's cache-clear) is made on every node; a node that cannot
  be asked turns the answer into 503, naming it, after the others have removed theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from edgecache.answer import Answer
from edgecache.appkeys import SETTINGS, SIBLINGS
from edgecache.holdings import Holdings, Removal
from edgecache.refusals import refusal
from edgecache.zone.sibling_holdings import SiblingHoldings

NODES_FIELD = "edgecache_nodes"


def glance_listing(per_node: Mapping[str | None, Holdings]) -> dict[str, Any]:
    """Glance's `GET /v2/cache` answer; nodes named (NODES_FIELD) unless the key is None."""
    cached: dict[str, dict[str, Any]] = {}
    queued: list[str] = []
    for node, held in per_node.items():
        for copy in held.copies:
            entry = cached.setdefault(
                copy.image_id,
                {
                    "image_id": copy.image_id,
                    "hits": 0,
                    "last_accessed": 0,
                    "last_modified": copy.last_modified,
                    "size": copy.size,
                },
            )
            entry["hits"] += copy.hits
            entry["last_accessed"] = max(entry["last_accessed"], copy.last_accessed)
            entry["last_modified"] = min(entry["last_modified"], copy.last_modified)
            if node is not None:
                entry.setdefault(NODES_FIELD, []).append(node)
        queued += [image_id for image_id in held.queued if image_id not in queued]
    return {"cached_images": list(cached.values()), "queued_images": queued}


async def zone_listing(app: web.Application, own: Holdings) -> dict[str, Any]:
    """The listing of this node (`own`) and every sibling that answers."""
    siblings = await SiblingHoldings(app[SIBLINGS]).listed()
    per_node: dict[str | None, Holdings] = {_self(app): own}
    per_node.update((peer, held) for peer, held in siblings.items() if held is not None)
    return glance_listing(per_node)


async def owner_elsewhere(app: web.Application, image_id: str) -> str | None:
    """The sibling that stores, fills or has queued (and can start) the image, if one does."""
    siblings = await SiblingHoldings(app[SIBLINGS]).listed()
    return next(
        (peer for peer, held in siblings.items() if held is not None and held.has(image_id)),
        None,
    )


async def remove_from_siblings(app: web.Application, image_id: str) -> dict[str, Removal | None]:
    """Each sibling's removal of the image (None: it could not be asked)."""
    return await SiblingHoldings(app[SIBLINGS]).remove(image_id)


async def clear_everywhere(app: web.Application, target: str) -> Answer | None:
    """Glance's cache-clear on every sibling (this node's is made already); the refusal if a
    sibling could not be asked."""
    answered = await SiblingHoldings(app[SIBLINGS]).clear(target)
    return unreached([peer for peer, done in answered.items() if done is None])


def unreached(nodes: list[str]) -> Answer | None:
    if not nodes:
        return None
    return refusal(
        503,
        f"The zone node(s) {', '.join(nodes)} could not be asked, and may still hold what was "
        "to be removed; the other nodes removed theirs. Try again when they answer.",
    )


def _self(app: web.Application) -> str:
    node = app[SETTINGS].zone_self
    assert node is not None, "config.py requires [zone] self with peers"
    return node
