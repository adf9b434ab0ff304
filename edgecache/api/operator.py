"""The operator's interface, `/edgecache/admin/...`: its own application, served only on the
local admin socket (edgecache.server), never on a TCP listener.

`edgecache status`, `cache list|evict|verify|clean` and `warm --pin` use it. It needs no token:
whoever can open the socket (its file mode, 0660) is the site's operator.
"""

from __future__ import annotations

import json
from dataclasses import asdict

from aiohttp import web

from edgecache.appkeys import CACHE, DOCUMENTS, METRICS, PREFETCHER, SETTINGS, UPSTREAM
from edgecache.documents import SHARED_SCOPE
from edgecache.metrics import Metrics
from edgecache.observe import OWN_ERRORS_LOG, add_request_id, observe_requests

PREFIX = "/edgecache/admin"


def create_operator_app(main: web.Application) -> web.Application:
    """The operator's application over the main application's components: the main runner
    must be set up (its components built) before this is called."""
    app = web.Application(middlewares=[observe_requests])
    for key in (CACHE, DOCUMENTS, METRICS, PREFETCHER, SETTINGS, UPSTREAM, OWN_ERRORS_LOG):
        app[key] = main[key]  # type: ignore[misc]
    app.on_response_prepare.append(add_request_id)
    router = app.router
    router.add_get(f"{PREFIX}/status", status, allow_head=False)
    router.add_get(f"{PREFIX}/cache", cache_list, allow_head=False)
    router.add_delete(f"{PREFIX}/cache/{{image_id}}", evict)
    router.add_post(f"{PREFIX}/verify", verify)
    router.add_post(f"{PREFIX}/verify/{{image_id}}", verify)
    router.add_delete(f"{PREFIX}/quarantine", clean_quarantine)
    router.add_put(f"{PREFIX}/pin/{{image_id}}", pin)
    router.add_delete(f"{PREFIX}/pin/{{image_id}}", pin)
    return app


async def status(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    uplink = request.app[UPSTREAM].uplink
    count, size = await cache.index.stats()
    return web.json_response(
        {
            "uplink": "up" if uplink.online else "down",
            "uplink_changed_at": uplink.changed_at,
            "uplink_reason": uplink.reason,
            "upstream": request.app[SETTINGS].upstream_url,
            "cached_images": count,
            "size": size,
            "capacity": request.app[SETTINGS].max_size,
            "hit_ratio": _hit_ratio(request.app[METRICS]),
            "fills": _fills(request),
            "jobs": [asdict(job) for job in request.app[PREFETCHER].progress()],
            "kept_partials": [
                {
                    "image_id": partial.image_id,
                    "kept": partial.length,
                    "size": partial.record.size,
                    "until": partial.since + cache.partials.keep_for,
                }
                for partial in cache.kept_partials()
            ],
        }
    )


async def cache_list(request: web.Request) -> web.Response:
    cache = request.app[CACHE]
    rows: list[dict[str, object]] = []
    for entry in await cache.index.all():
        rows.append(
            {
                "image_id": entry.image_id,
                "name": await _name(request, entry.image_id),
                "size": entry.size,
                "hits": entry.hits,
                "last_access": entry.last_access,
                "created_at": entry.created_at,
                "pinned": entry.pinned,
                "state": "cached",
            }
        )
    for fill in _fills(request):
        fill.update(name=await _name(request, str(fill["image_id"])), state="filling")
        rows.append(fill)
    return web.json_response({"images": rows})


async def evict(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    cache = request.app[CACHE]
    if await cache.index.get(image_id) is None:
        raise web.HTTPNotFound(text=f"image {image_id} is not cached\n")
    if not await cache.evictor.remove(image_id):
        raise web.HTTPConflict(text=f"image {image_id} is being read; try again later\n")
    return web.Response(status=204)


async def verify(request: web.Request) -> web.Response:
    """Re-hash stored copies (one, or all); corrupt ones are quarantined and reported."""
    cache = request.app[CACHE]
    wanted = request.match_info.get("image_id")
    entries = [e for e in await cache.index.all() if wanted in (None, e.image_id)]
    if wanted is not None and not entries:
        raise web.HTTPNotFound(text=f"image {wanted} is not cached\n")
    report = []
    for entry in entries:
        try:
            corrupt = await cache.scrub(entry)
        except FileNotFoundError:
            continue  # evicted while we went through the list
        report.append(
            {
                "image_id": entry.image_id,
                "size": entry.size,
                "ok": corrupt is None,
                "problem": str(corrupt) if corrupt else None,
            }
        )
    return web.json_response({"verified": report})


async def clean_quarantine(request: web.Request) -> web.Response:
    """Remove every quarantined copy."""
    removed = await request.app[CACHE].quarantine.empty()
    return web.json_response({"files": removed.files, "size": removed.size})


async def pin(request: web.Request) -> web.Response:
    image_id = request.match_info["image_id"]
    if not await request.app[CACHE].index.set_pinned(image_id, request.method == "PUT"):
        raise web.HTTPNotFound(text=f"image {image_id} is not cached\n")
    return web.Response(status=204)


def _fills(request: web.Request) -> list[dict[str, object]]:
    fills = request.app[CACHE].fills
    return [
        {"image_id": image_id, "written": fill.written, "size": fill.size}
        for image_id in fills.running()
        if (fill := fills.current(image_id)) is not None
    ]


async def _name(request: web.Request, image_id: str) -> str | None:
    record = await request.app[DOCUMENTS].get(SHARED_SCOPE, f"/v2/images/{image_id}")
    if record is None:
        return None
    try:
        name = json.loads(record.body).get("name")
    except ValueError:
        return None
    return str(name) if name is not None else None


def _hit_ratio(metrics: Metrics) -> float | None:
    """Share of image data requests answered from disk since the daemon started."""
    counts = {
        sample.labels["result"]: sample.value
        for family in metrics.data_requests.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    total = sum(counts.values())
    return counts.get("hit", 0) / total if total else None
