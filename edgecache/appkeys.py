"""Typed keys through which handlers reach the components built by the application factory."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from edgecache.authorization.authority import Authority
from edgecache.authorization.decision import DownloadDecisions
from edgecache.authorization.decisions import DecisionStore
from edgecache.authorization.recall import Recall
from edgecache.authorization.revalidate import Revalidator
from edgecache.config import Settings
from edgecache.documents import DocumentStore
from edgecache.metrics import Metrics
from edgecache.prefetch.queue import Prefetcher
from edgecache.prefetch.window import Clock
from edgecache.refusals import Unauthorized
from edgecache.store.cache import ImageCache
from edgecache.transfer.source import Sources
from edgecache.upstream.client import Upstream
from edgecache.zone.siblings import Siblings
from edgecache.zone.signing import SignatureCheck

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
UPSTREAM = web.AppKey("upstream", Upstream)
CACHE = web.AppKey("cache", ImageCache)
AUTHORITY = web.AppKey("authority", Authority)
RECALL = web.AppKey("recall", Recall)
DOWNLOADS = web.AppKey("downloads", DownloadDecisions)  # may this caller have these bytes?
SOURCES = web.AppKey("sources", Sources)  # where they come from
UNAUTHORIZED = web.AppKey("unauthorized", Unauthorized)  # keystonemiddleware's 401, as Glance's
# only with [keystone] service credentials: remembered records re-read as the service user
REVALIDATOR = web.AppKey("revalidator", Revalidator)
# Glance's documents and decisions, remembered in the index's database beside the blob rows
DOCUMENTS = web.AppKey("documents", DocumentStore)
DECISIONS = web.AppKey("decisions", DecisionStore)
PREFETCHER = web.AppKey("prefetcher", Prefetcher)
PREFETCH_CLOCK = web.AppKey("prefetch_clock", Clock)  # when [prefetch] window is open
SIBLINGS = web.AppKey("siblings", Siblings)  # only in a zone of several nodes ([zone] peers)
KEYSTONE_SESSION = web.AppKey("keystone_session", aiohttp.ClientSession)
ZONE_SIGNATURES = web.AppKey("zone_signatures", SignatureCheck)  # the zone's application only
