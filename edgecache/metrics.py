"""Prometheus metric definitions, one registry per application (no global state).

Hit ratio, for example, is one expression away:
    sum(rate(edgecache_data_requests_total{result="hit"}[5m]))
      / sum(rate(edgecache_data_requests_total[5m]))
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TRANSFER_BUCKETS = (*_LATENCY_BUCKETS, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # --- requests --------------------------------------------------------------------
        self.requests = Counter(
            "edgecache_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.malformed_requests = Counter(
            "edgecache_malformed_requests",
            "Requests that were not valid HTTP (answered 400 by the HTTP parser, logged throttled)",
            registry=r,
        )
        self.request_duration = Histogram(
            "edgecache_request_duration_seconds",
            "Time to answer a request (whole transfer for streamed bodies), by route",
            ["route"],
            buckets=_TRANSFER_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "edgecache_upstream_request_duration_seconds",
            "Time until the upstream Glance answered (response headers), by method",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_active = Gauge(
            "edgecache_upstream_active",
            "1 for the upstream endpoint requests go to now, 0 for the others",
            ["endpoint"],
            registry=r,
        )
        self.upstream_failures = Counter(
            "edgecache_upstream_failures",
            "Upstream (and Keystone) requests and probes that got no usable answer, by reason",
            # tls_untrusted, tls_expired, tls_hostname, tls_client_certificate, tls_handshake,
            # connect, timeout, disconnected, broken, unavailable
            ["reason"],
            registry=r,
        )
        self.upstream_connections_in_use = Gauge(
            "edgecache_upstream_connections_in_use",
            "Upstream connections in use, by pool (data: image bytes; metadata: the rest)",
            ["pool"],
            registry=r,
        )
        self.upstream_connection_limit = Gauge(
            "edgecache_upstream_connection_limit",
            "The configured most upstream connections of each pool",
            ["pool"],
            registry=r,
        )
        self.upstream_pool_wait = Histogram(
            "edgecache_upstream_pool_wait_seconds",
            "Time requests waited in line for an upstream connection of a full pool, by pool",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_pool_refusals = Counter(
            "edgecache_upstream_pool_refusals",
            "Requests answered 503 because no upstream connection came free in time, by pool",
            ["pool"],
            registry=r,
        )
        self.data_requests = Counter(
            "edgecache_data_requests",
            "Image data requests by how they were answered",
            ["result"],  # hit, miss, passthrough, unavailable
            registry=r,
        )
        self.metadata_requests = Counter(
            "edgecache_metadata_requests",
            "Metadata reads (records, lists, schemas, versions) by where the answer came from",
            ["result"],  # upstream (fresh from Glance), cache (remembered), refused (offline)
            registry=r,
        )
        self.bytes_served = Counter(
            "edgecache_served_bytes",
            "Image bytes sent to callers, by where they came from",
            ["source"],  # cache, fill, upstream
            registry=r,
        )
        self.bytes_fetched = Counter(
            "edgecache_fetched_bytes", "Image bytes fetched from the upstream by fills", registry=r
        )
        # --- the uplink budget (edgecache.upstream.budget) ----------------------------------
        self.uplink_bytes = Counter(
            "edgecache_uplink_bytes",
            "Image bytes fills took from the region, by class of the uplink budget (boot: a "
            "caller waits for them; prefetch: none does)",
            ["class"],
            registry=r,
        )
        self.uplink_wait = Counter(
            "edgecache_uplink_wait_seconds",
            "Seconds fills waited for the uplink budget, summed over their requests, by class",
            ["class"],
            registry=r,
        )
        self.uplink_max_rate = Gauge(
            "edgecache_uplink_max_rate_bytes",
            "The uplink budget ([upstream] max_rate) in bytes per second; 0: no cap",
            registry=r,
        )
        # --- the zone (edgecache.zone) ----------------------------------------------------
        self.sibling_bytes_fetched = Counter(
            "edgecache_sibling_fetched_bytes",
            "Image bytes fills took from sibling nodes of the zone instead of the upstream",
            registry=r,
        )
        self.sibling_lookups = Counter(
            "edgecache_sibling_lookups",
            "Questions to sibling nodes whether they have an image, by answer",
            ["result"],  # stored, filling, miss, error
            registry=r,
        )
        self.sibling_bytes_served = Counter(
            "edgecache_sibling_served_bytes",
            "Image bytes this node sent to sibling nodes for their fills",
            registry=r,
        )
        self.transfers_in_progress = Gauge(
            "edgecache_transfers_in_progress",
            "Image data transfers to callers under way, by source",
            ["source"],
            registry=r,
        )
        # --- fills -----------------------------------------------------------------------
        self.fills_started = Counter(
            "edgecache_fills_started", "Fills started (one upstream stream each)", registry=r
        )
        self.fills = Counter(
            "edgecache_fills", "Finished fills by outcome", ["outcome"], registry=r
        )
        self.fills_in_progress = Gauge(
            "edgecache_fills_in_progress", "Fills currently running", registry=r
        )
        self.fill_resumes = Counter(
            "edgecache_fill_resumes", "Upstream streams resumed with a Range request", registry=r
        )
        self.fill_memory = Gauge(
            "edgecache_fill_memory_bytes",
            "Bytes all fills together hold in memory (received, not yet written and hashed)",
            registry=r,
        )
        self.fill_memory_limit = Gauge(
            "edgecache_fill_memory_limit_bytes",
            "The budget for those bytes ([cache] fill_memory); fills wait for room beyond it",
            registry=r,
        )
        self.verification_failures = Counter(
            "edgecache_verification_failures",
            "Fills whose size or checksum did not match Glance's",
            registry=r,
        )
        self.corrupt_blobs = Counter(
            "edgecache_corrupt_blobs",
            "Stored copies whose chunk hashes stopped matching (quarantined)",
            registry=r,
        )
        # --- the store -------------------------------------------------------------------
        self.evictions = Counter(
            "edgecache_evictions", "Copies evicted to stay under max_size", registry=r
        )
        self.evicted_bytes = Counter(
            "edgecache_evicted_bytes", "Bytes evicted to stay under max_size", registry=r
        )
        self.cache_size = Gauge(
            "edgecache_cache_size_bytes", "Bytes of verified copies on disk", registry=r
        )
        self.cache_capacity = Gauge(
            "edgecache_cache_capacity_bytes", "The configured max_size", registry=r
        )
        self.cached_images = Gauge(
            "edgecache_cached_images", "Verified image copies on disk", registry=r
        )
        self.quarantine_files = Gauge(
            "edgecache_quarantine_files",
            "Corrupt copies kept in quarantine/ (they count toward max_size)",
            registry=r,
        )
        self.quarantine_bytes = Gauge(
            "edgecache_quarantine_bytes", "Bytes of the copies in quarantine/", registry=r
        )
        self.quarantine_removed = Counter(
            "edgecache_quarantine_removed_files",
            "Quarantined copies removed, by reason",
            ["reason"],  # room (for max_size), age (quarantine_keep), clean (on request)
            registry=r,
        )
        self.kept_partials = Gauge(
            "edgecache_kept_partials",
            "Partial fills kept to be resumed (they count toward max_size)",
            registry=r,
        )
        self.kept_partial_bytes = Gauge(
            "edgecache_kept_partial_bytes", "Bytes of the partial fills kept", registry=r
        )
        self.kept_partials_discarded = Counter(
            "edgecache_kept_partials_discarded",
            "Partial fills kept by an earlier run and not resumed, or resumed and not verified",
            # corrupt (no record, longer than the image), age (keep_partials), room (max_size),
            # changed (at the region), verification (the whole image did not verify)
            ["reason"],
            registry=r,
        )
        self.resumed_bytes = Counter(
            "edgecache_resumed_bytes",
            "Bytes of kept partial fills that fills read back instead of fetching them again",
            registry=r,
        )
        # --- offline ---------------------------------------------------------------------
        self.uplink_up = Gauge(
            "edgecache_uplink_up", "1 while the regional Glance is reachable, else 0", registry=r
        )
        self.uplink_changed = Gauge(
            "edgecache_uplink_last_change_timestamp_seconds",
            "When the uplink last went up or down (Unix time)",
            registry=r,
        )
        self.revalidations = Counter(
            "edgecache_revalidated_decisions",
            "Remembered decisions re-checked after the uplink came back, by outcome",
            ["outcome"],  # kept, revoked, deleted
            registry=r,
        )
        self.index_bytes = Gauge(
            "edgecache_index_bytes",
            "Bytes the cache index (copies, remembered documents and decisions) takes",
            registry=r,
        )
        self.index_max_bytes = Gauge(
            "edgecache_index_max_bytes", "[cache] index_max_size", registry=r
        )
        self.index_rows_dropped = Counter(
            "edgecache_index_rows_dropped",
            "Remembered answers dropped from the index, by reason (age, size)",
            ["reason"],
            registry=r,
        )
        self.oldest_cached_record_age = Gauge(
            "edgecache_oldest_cached_image_record_age_seconds",
            "Age of the oldest remembered Glance record of a cached image, as of the last "
            "background re-read ([offline] record_max_age bounds it while the uplink is up)",
            registry=r,
        )
        self.record_refreshes = Counter(
            "edgecache_record_refreshes",
            "Records of cached images re-read from Glance in the background",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
