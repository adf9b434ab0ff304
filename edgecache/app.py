"""The application factory: components built once, routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from edgecache import documents
from edgecache.api import glance_cache
from edgecache.api.busy import BUSY_LOG, busy_log, refuse_when_busy
from edgecache.api.data import image_file
from edgecache.api.metadata import image_list, image_members, image_record, schema
from edgecache.api.ops import healthz, metrics
from edgecache.api.proxy import passthrough
from edgecache.api.versions import versions
from edgecache.appkeys import (
    AUTHORITY,
    CACHE,
    DECISIONS,
    DOCUMENTS,
    DOWNLOADS,
    KEYSTONE_SESSION,
    METRICS,
    PREFETCH_CLOCK,
    PREFETCHER,
    RECALL,
    REVALIDATOR,
    SETTINGS,
    SIBLINGS,
    SOURCES,
    UNAUTHORIZED,
    UPSTREAM,
)
from edgecache.authorization import decisions
from edgecache.authorization.authority import Authority
from edgecache.authorization.bootdocs import BootDocuments
from edgecache.authorization.decision import DownloadDecisions
from edgecache.authorization.decisions import DecisionStore
from edgecache.authorization.identity import TokenHasher
from edgecache.authorization.keystone import service_keystone
from edgecache.authorization.offline import OfflineAnswers
from edgecache.authorization.recall import Recall
from edgecache.authorization.revalidate import Revalidator
from edgecache.config import Settings
from edgecache.documents import DocumentStore
from edgecache.metrics import Metrics
from edgecache.observe import OWN_ERRORS_LOG, add_request_id, observe_requests, own_errors_log
from edgecache.prefetch import jobs
from edgecache.prefetch.credentials import JobCredentials
from edgecache.prefetch.jobs import JobStore
from edgecache.prefetch.queue import Prefetcher
from edgecache.prefetch.window import Clock, Window
from edgecache.refusals import Unauthorized
from edgecache.store.cache import ImageCache
from edgecache.store.source import RegionSource, SourcePicker
from edgecache.systemd import systemd_notify_ctx
from edgecache.transfer.source import Sources
from edgecache.upkeep import IndexUpkeep
from edgecache.upstream.budget import UplinkBudget
from edgecache.upstream.client import Upstream
from edgecache.zone.siblings import Siblings, ZoneSources

IMAGE_ID = r"{image_id:[^/]+}"
TOKEN_KEY_FILE = "token-hash.key"


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    """`clock`: local time for [prefetch] window (tests drive one of their own)."""
    app = web.Application(client_max_size=0, middlewares=[observe_requests, refuse_when_busy])
    app[SETTINGS] = settings
    app[PREFETCH_CLOCK] = clock or Clock()
    app[METRICS] = Metrics()
    app[BUSY_LOG] = busy_log()
    app[OWN_ERRORS_LOG] = own_errors_log()
    app.on_response_prepare.append(add_request_id)
    app.cleanup_ctx.append(systemd_notify_ctx)  # first: its watchdog pings outlive _components
    app.cleanup_ctx.append(_siblings)
    app.cleanup_ctx.append(_components)
    router = app.router
    router.add_get("/", versions, allow_head=False)
    router.add_get("/versions", versions, allow_head=False)
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics, allow_head=False)
    router.add_get("/v2/images", image_list, allow_head=False)
    router.add_get(f"/v2/images/{IMAGE_ID}", image_record, allow_head=False)
    router.add_get(f"/v2/images/{IMAGE_ID}/members", image_members, allow_head=False)
    router.add_get(f"/v2/images/{IMAGE_ID}/members/{{member_id}}", image_members, allow_head=False)
    router.add_get("/v2/schemas/{schema:.+}", schema, allow_head=False)
    router.add_route("GET", f"/v2/images/{IMAGE_ID}/file", image_file)
    router.add_route("HEAD", f"/v2/images/{IMAGE_ID}/file", image_file)
    router.add_get("/v2/cache", glance_cache.cache_state, allow_head=False)
    router.add_delete("/v2/cache", glance_cache.clear)
    router.add_put("/v2/cache/{image_id}", glance_cache.queue_image)
    router.add_delete("/v2/cache/{image_id}", glance_cache.delete_entry)
    router.add_post("/v2/cache/prune", glance_cache.prune)
    router.add_post("/v2/cache/clean", glance_cache.clean)
    router.add_route("*", "/{tail:.*}", passthrough)
    return app


async def _siblings(app: web.Application) -> AsyncIterator[None]:
    """The zone's other nodes, when [zone] peers names some."""
    if not app[SETTINGS].siblings:
        yield
        return
    siblings = Siblings(app[SETTINGS], app[METRICS])
    await siblings.start()
    app[SIBLINGS] = siblings
    try:
        yield
    finally:
        await siblings.close()


async def _components(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    upstream = Upstream(settings, app[METRICS])
    await upstream.start()
    app[UPSTREAM] = upstream
    region = RegionSource(upstream)
    sources: SourcePicker = ZoneSources(app[SIBLINGS], region) if SIBLINGS in app else region
    try:
        # The remembered documents, decisions and prefetch jobs live in the index's database,
        # beside (not inside) the blob index: the store knows nothing of them.
        cache = await ImageCache.open(
            settings,
            sources,
            app[METRICS],
            UplinkBudget(settings.max_rate, app[METRICS]),
            beside=(documents.SCHEMA, decisions.SCHEMA, jobs.SCHEMA),
        )
        app[CACHE] = cache
        app[DOCUMENTS] = DocumentStore(cache.index.database)
        app[DECISIONS] = DecisionStore(cache.index.database)
        await app[DECISIONS].purge_expired()
        credentials = settings.service_credentials
        keystone = None
        if credentials is not None:
            keystone, app[KEYSTONE_SESSION] = service_keystone(credentials, settings, app[METRICS])
        validating = settings.validation_credentials
        app[AUTHORITY] = Authority(
            decisions=app[DECISIONS],
            documents=app[DOCUMENTS],
            hasher=TokenHasher.from_file(Path(settings.cache_dir) / TOKEN_KEY_FILE),
            ttl=settings.decision_ttl,
            token_lifetime=settings.token_lifetime,
            keystone=(
                keystone.acting_as(validating)
                if keystone is not None and validating is not None and validating != credentials
                else keystone
            ),
            offline_download_roles=settings.offline_download_roles,
            # Records are kept young only where the service user can re-read them.
            open_record_max_age=settings.record_max_age if keystone is not None else None,
        )
        background: set[asyncio.Task[None]] = set()
        if keystone is not None:
            revalidator = Revalidator(
                upstream=upstream,
                keystone=keystone,
                documents=app[DOCUMENTS],
                decisions=app[DECISIONS],
                cached=cache.index.image_ids,
                evict=cache.evictor.remove,
                metrics=app[METRICS],
                forget_recent=lambda: _forget_recent(app),
            )
            app[REVALIDATOR] = revalidator
            upstream.uplink.on_reconnect(revalidator.run)
            background.add(
                asyncio.create_task(
                    revalidator.keep_fresh(settings.record_max_age), name="record-freshness"
                )
            )
        app[UNAUTHORIZED] = Unauthorized()
        offline = OfflineAnswers(
            authority=app[AUTHORITY], documents=app[DOCUMENTS], unauthorized=app[UNAUTHORIZED]
        )
        app[RECALL] = Recall(
            upstream=upstream,
            documents=app[DOCUMENTS],
            authority=app[AUTHORITY],
            offline=offline,
            unauthorized=app[UNAUTHORIZED],
            metrics=app[METRICS],
            reuse_decisions_for=settings.reuse_decisions_for,
        )
        app[SOURCES] = Sources(
            cache=cache,
            uplink=upstream.uplink,
            siblings=app.get(SIBLINGS),
            metrics=app[METRICS],
        )
        app[DOWNLOADS] = DownloadDecisions(
            recall=app[RECALL],
            authority=app[AUTHORITY],
            offline=offline,
            unauthorized=app[UNAUTHORIZED],
            reuse_decisions_for=settings.reuse_decisions_for,
        )
        boot_documents = BootDocuments(app[RECALL], app[AUTHORITY], keystone)
        upstream.uplink.on_reconnect(boot_documents.refresh)
        fetching = asyncio.create_task(boot_documents.refresh(), name="boot-documents")
        background.add(fetching)
        # Ready once they are in (a few small GETs), or after a connect timeout if the region
        # is slow; then they go on arriving in the background.
        await asyncio.wait({fetching}, timeout=settings.connect_timeout)
        upkeep = IndexUpkeep(
            db=cache.index.database,
            documents=app[DOCUMENTS],
            decisions=app[DECISIONS],
            metrics=app[METRICS],
            max_bytes=settings.index_max_size,
            document_ttl=settings.decision_ttl,
        )
        background.add(asyncio.create_task(upkeep.run_forever(), name="index-upkeep"))
        app[PREFETCHER] = Prefetcher(
            cache=cache,
            jobs=JobStore(cache.index.database),
            credentials=JobCredentials(keystone),
            upstream=upstream,
            parallel=settings.prefetch_parallel,
            window=Window(*settings.prefetch_window) if settings.prefetch_window else None,
            clock=app[PREFETCH_CLOCK],
        )
        await app[PREFETCHER].start()
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await app[PREFETCHER].close()
            await app[CACHE].close()
    finally:
        if KEYSTONE_SESSION in app:
            await app[KEYSTONE_SESSION].close()
        await upstream.close()


def _forget_recent(app: web.Application) -> None:
    app[AUTHORITY].forget_recent()
    app[RECALL].forget_recent()
