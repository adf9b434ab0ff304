"""[upstream]: the regional Glance, and how edgecache talks to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecache.config.declaration import Section
from edgecache.config.kinds import Boolean, Count, OrUnset, Seconds, Size, Url, UrlList

UPSTREAM = Section("upstream")
# The uplink budget (issue 22): below this, one piece a fill reads (up to 256 KiB) would be
# seconds of the budget.
MIN_MAX_RATE = 64 * 2**10


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    upstream: str = UPSTREAM.setting(
        Url(),
        "",
        key="url",
        example="http://glance.region.example:9292",
        flag="the regional glance-api URL; more, comma-separated, are fallbacks in order",
    )
    """The regional glance-api, as nova would reach it (include a path prefix if it has one)."""

    fallbacks: tuple[str, ...] = UPSTREAM.setting(UrlList(), ())
    """Other endpoints of the same regional Glance (or another edgecache, for a tier below an edge
    site), tried in order when the one in use stops answering; the primary is taken back as soon
    as it answers again. The uplink is down only when none answers. On the command line, they
    follow the primary in --upstream, comma-separated."""

    connect_timeout: float = UPSTREAM.setting(Seconds(), 5.0)
    """Seconds to wait for a TCP/TLS connection to the upstream."""

    read_timeout: float = UPSTREAM.setting(Seconds(), 30.0)
    """Seconds without a single byte from the upstream before a read is abandoned (a fill then
    resumes from where it stopped)."""

    stall_timeout: float = UPSTREAM.setting(Seconds(), 60.0)
    """Seconds a fill may go without a new byte, across resumes and short uplink outages, before
    it is abandoned (its callers' transfers then fail visibly)."""

    failures_to_offline: int = UPSTREAM.setting(Count(), 2)
    """Consecutive connection failures, timeouts or 502/503/504 answers after which the uplink is
    considered down: requests are then answered from the cache without trying the upstream."""

    probe_interval: float = UPSTREAM.setting(Seconds(), 2.0)
    """Seconds between probes of the upstream while the uplink is down."""

    upstream_ca_file: Path | None = UPSTREAM.pem_file(
        "CA",
        key="ca_file",
        flag="CA bundle (file or directory) the upstream's certificate is checked against",
        suggest="/etc/edgecache/tls/region-ca.pem",
    )
    """TLS to the upstream (https:// URLs), for the primary and every fallback. The CA that
    issued the upstream's certificate: a PEM file or a directory of them (c_rehash'ed); "" uses
    the system's CAs."""

    upstream_client_cert: Path | None = UPSTREAM.pem_file(
        "certificate",
        key="client_cert",
        flag="client certificate (PEM) for the upstream",
        suggest="/etc/edgecache/tls/edge-client.pem",
    )
    """A client certificate (PEM, with its chain), for a region that asks for one (mutual
    TLS)."""

    upstream_client_key: Path | None = UPSTREAM.private_key(
        of="client_cert",
        key="client_key",
        flag="its private key (PEM)",
        suggest="/etc/edgecache/tls/edge-client.key",
    )
    """The client certificate's private key (PEM), unless client_cert's file holds it too."""

    upstream_verify: bool = UPSTREAM.setting(
        Boolean(),
        True,
        key="verify",
        flag="verify the upstream's certificate and name; --no-upstream-verify is for labs only",
    )
    """Verify the upstream's certificate and that it names the host of the URL. false is for a
    lab only (logged as a WARNING at start): anyone on the path could pose as the region."""

    data_connections: int = UPSTREAM.setting(Count(), 16)
    """The most connections to the upstream at once that carry image bytes (fills, relays, Range
    requests and uploads passed through): a pool of their own, apart from metadata_connections,
    so that a burst of image transfers can never leave authorizations waiting."""

    metadata_connections: int = UPSTREAM.setting(Count(), 32)
    """The most connections to the upstream at once for everything else (the record GET that
    authorizes every download, lists, schemas, writes, probes)."""

    pool_wait: float = UPSTREAM.setting(Seconds(), 10.0)
    """Seconds a request waits in line when its pool is full; after that it is answered 503 with
    Retry-After (edgecache_upstream_pool_refusals_total counts them). A fill that cannot get a
    connection in time fails like any other fill: its callers' transfers are aborted."""

    # --- the uplink budget (issue 22) -----------------------------------------------------
    max_rate: int | None = UPSTREAM.setting(
        OrUnset(Size(at_least=MIN_MAX_RATE)), None, suggest=20 * 2**20
    )
    """The uplink budget: the most bytes per second all fills of this node together take from
    the region (a size per second: "12.5MB" is 100 Mbit/s). Fills a caller waits for (boots) go
    first; a prefetch (glance cache-queue, edgecache warm --queue) takes nothing while a boot is
    under way, and a caller that joins a prefetch makes it a boot. A prefetch's connection gets
    a receive window of 0.1 s of max_rate. Bytes from sibling nodes of the zone do not count;
    nor do Range requests and uploads passed through to Glance, or images relayed without a
    fill. Set it a little below the uplink's own rate (say 90%), so that the budget, not the
    link's queue, decides who goes first. In a zone of several nodes, each node's max_rate is
    its share of the site's uplink (the shares add up to the site's budget). Unset: no cap.
    docs/deployment.md, "The uplink budget"; metrics edgecache_uplink_bytes_total{class},
    edgecache_uplink_wait_seconds_total{class}."""
    # --- end of the uplink budget ---------------------------------------------------------

    @property
    def upstream_url(self) -> str:
        return self.upstream.rstrip("/")

    @property
    def upstream_urls(self) -> tuple[str, ...]:
        """The primary upstream first, then the fallbacks in order of preference."""
        return (self.upstream_url, *(url.rstrip("/") for url in self.fallbacks))
