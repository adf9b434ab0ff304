"""[zone]: the other edgecache nodes of this edge zone, and how the nodes talk to each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecache.config.declaration import Section
from edgecache.config.kinds import Listen, NodeUrls, OrUnset, Seconds, Secret, Url

ZONE = Section(
    "zone",
    intro="Several edgecache nodes behind HAProxy in one edge zone (config/haproxy.cfg): a node "
    "that misses an image asks its siblings before the region, and takes the bytes from one "
    "that has the image or is fetching it, so an image crosses the WAN once per zone even when "
    'HAProxy spreads a boot storm over every node (docs/deployment.md, "A zone of several '
    'nodes"). Siblings are only a source of bytes: every caller is still authorized with '
    "Glance, and every byte is verified against Glance's checksums as in a fill from the region.",
)
MIN_ZONE_SECRET = 16


@dataclass(frozen=True, kw_only=True)
class ZoneSettings:
    zone_peers: tuple[str, ...] = ZONE.setting(NodeUrls(), (), key="peers")
    """Every node of the zone, the same list on each node (this node included), as the URL of its
    zone listener (`listen` below, not the clients' address); empty for a node on its own, e.g.

      peers = ["http://10.0.0.11:9293", "http://10.0.0.12:9293", "http://10.0.0.13:9293"]
    """

    zone_self: str | None = ZONE.setting(OrUnset(Url(node=True)), None, key="self")
    """This node's own URL, exactly as it appears in peers (so it never asks itself)."""

    zone_listen: tuple[str, int] | None = ZONE.setting(OrUnset(Listen()), None, key="listen")
    """HOST:PORT of this node's zone listener, where its siblings ask it for image bytes; required
    with peers. Its own address, never the clients' one and never behind HAProxy: keep it on the
    zone's internal network (docs/deployment.md, "A zone of several nodes")."""

    zone_secret: str | None = ZONE.setting(OrUnset(Secret(MIN_ZONE_SECRET)), None, key="secret")
    """Shared by the zone's nodes (e.g. `openssl rand -hex 32`): each request to a sibling is
    signed with it (HMAC-SHA256 over the request and the time; the secret itself is never sent),
    and the zone listener answers only requests signed with it within 30 seconds of its own
    clock, each once, so nothing outside the zone can read image bytes past Glance's
    authorization. Keep the nodes' clocks synchronized (NTP), and the file readable by edgecache
    only."""

    zone_lookup_timeout: float = ZONE.setting(Seconds(), 1.0, key="lookup_timeout")
    """Seconds a look-up at the siblings may take before this node goes to the region instead (a
    dead sibling must not hold up a boot)."""

    zone_ca_file: Path | None = ZONE.pem_file(
        "CA", key="ca_file", suggest="/etc/edgecache/tls/zone-ca.pem"
    )
    """TLS between the nodes, with the zone's own CA (docs/deployment.md, "TLS between the
    nodes"): peers and self are then https URLs, and every node has this setting and the four
    below (each node with its own certificate and key).

    The zone's CA (file or directory, PEM): siblings' certificates are verified against it (the
    system's CAs when ""); with tls_cert set, this node's zone listener also requires every
    sibling to present a client certificate it issued."""

    zone_client_cert: Path | None = ZONE.pem_file(
        "certificate", key="client_cert", suggest="/etc/edgecache/tls/node1.pem"
    )
    """The certificate (with its chain) this node presents when it asks a sibling; the same file
    as tls_cert will do if its certificate allows client authentication too."""

    zone_client_key: Path | None = ZONE.private_key(
        of="client_cert", key="client_key", suggest="/etc/edgecache/tls/node1.key"
    )
    """Its private key (PEM), unless client_cert's file holds it too."""

    zone_tls_cert: Path | None = ZONE.pem_file(
        "certificate", key="tls_cert", suggest="/etc/edgecache/tls/node1.pem"
    )
    """HTTPS on the zone listener (and only HTTPS there): its certificate (valid for the host name
    or address in self), PEM; re-read on SIGHUP like [server] tls_cert."""

    zone_tls_key: Path | None = ZONE.private_key(
        of="tls_cert", key="tls_key", suggest="/etc/edgecache/tls/node1.key"
    )
    """Its private key (PEM), unless tls_cert's file holds it too."""

    @property
    def siblings(self) -> tuple[str, ...]:
        """The other nodes of this zone (every configured peer but this node itself)."""
        return tuple(peer for peer in self.zone_peers if peer != self.zone_self)
