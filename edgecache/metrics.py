"""Prometheus metric definitions, one registry per application (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.data_requests = Counter(
            "edgecache_data_requests",
            "Image data requests by how they were answered",
            ["result"],  # hit, miss, passthrough
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
        self.fills = Counter(
            "edgecache_fills", "Finished fills by outcome", ["outcome"], registry=r
        )
        self.fills_in_progress = Gauge(
            "edgecache_fills_in_progress", "Fills currently running", registry=r
        )
        self.fill_resumes = Counter(
            "edgecache_fill_resumes", "Upstream streams resumed with a Range request", registry=r
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
        self.evictions = Counter(
            "edgecache_evictions", "Blobs evicted to stay under max_size", registry=r
        )

        self.revalidations = Counter(
            "edgecache_revalidated_decisions",
            "Remembered decisions re-checked after the uplink came back, by outcome",
            ["outcome"],  # kept, revoked, deleted
            registry=r,
        )
        self.uplink_up = Gauge(
            "edgecache_uplink_up", "1 while the regional Glance is reachable, else 0", registry=r
        )
        self.uplink_changed = Gauge(
            "edgecache_uplink_last_change_timestamp_seconds",
            "When the uplink last went up or down (Unix time)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
