"""The checks across settings, made once each setting has been read on its own: what one
setting needs of others (a key its certificate, a zone its own address and secret)."""

from __future__ import annotations

from pathlib import Path

from edgecache.config.catalog import TLS_PAIRS, name_of
from edgecache.config.errors import ConfigError
from edgecache.config.pem import holds_private_key
from edgecache.config.settings import Settings

_ANY_ADDRESSES = ("0.0.0.0", "::")
# What means something only in a zone, with zone.peers
_ZONE_ONLY = (
    "zone_self",
    "zone_secret",
    "zone_listen",
    "zone_ca_file",
    "zone_client_cert",
    "zone_client_key",
    "zone_tls_cert",
    "zone_tls_key",
)


def check(settings: Settings, *, require_upstream: bool) -> None:
    """Raise a ConfigError naming the first setting that does not go with the others."""
    if require_upstream and not settings.upstream:
        raise ConfigError("upstream.url", "no upstream Glance given (set it or pass --upstream)")
    _check_keystone(settings)
    _check_tls_pairs(settings)
    _check_zone(settings)


def _check_keystone(settings: Settings) -> None:
    if settings.keystone_url is None:
        return
    for needed in ("username", "password"):
        if getattr(settings, f"keystone_{needed}") is None:
            raise ConfigError(f"keystone.{needed}", "required when keystone.auth_url is set")


def _check_tls_pairs(settings: Settings) -> None:
    """A key needs its certificate, and a certificate its key (unless the file holds both)."""
    for cert_setting, key_setting in TLS_PAIRS:
        cert: Path | None = getattr(settings, cert_setting.attr)
        key: Path | None = getattr(settings, key_setting.attr)
        if key is not None and cert is None:
            raise ConfigError(key_setting.name, f"set {cert_setting.name} too")
        if cert is not None and key is None and not holds_private_key(cert):
            raise ConfigError(
                key_setting.name,
                f"required with {cert_setting.name} (its file holds no private key)",
            )
    if settings.tls_client_ca is not None and settings.tls_cert is None:
        raise ConfigError("server.tls_client_ca", "client certificates need server.tls_cert")


def _check_zone(settings: Settings) -> None:
    """Peers need this node's own address among them, the zone's shared secret and the
    address of the sibling endpoint, which is not the clients' one."""
    if not settings.zone_peers:
        for attr in _ZONE_ONLY:
            if getattr(settings, attr) is not None:
                raise ConfigError(name_of(attr), "set zone.peers too")
        return
    if settings.zone_self is None:
        raise ConfigError("zone.self", "required with zone.peers: this node's own URL in it")
    if settings.zone_self not in settings.zone_peers:
        raise ConfigError("zone.self", f"{settings.zone_self} is not one of zone.peers")
    if settings.zone_secret is None:
        raise ConfigError("zone.secret", "required with zone.peers (the nodes share it)")
    if settings.zone_listen is None:
        raise ConfigError(
            "zone.listen", "required with zone.peers: HOST:PORT of the siblings' own listener"
        )
    host, port = settings.zone_listen
    client_host, client_port = settings.listen
    if port == client_port and (
        host == client_host or host in _ANY_ADDRESSES or client_host in _ANY_ADDRESSES
    ):
        raise ConfigError("zone.listen", f"{host}:{port} is the clients' address (server.listen)")
    _check_zone_tls(settings.zone_self, settings)


def _check_zone_tls(zone_self: str, settings: Settings) -> None:
    """The zone listener speaks what zone.self says, and a node that asks its siblings for a
    client certificate presents one to them too (they have the same settings)."""
    https = zone_self.startswith("https:")
    if https and settings.zone_tls_cert is None:
        raise ConfigError("zone.tls_cert", "required: zone.self is an https URL")
    if not https and settings.zone_tls_cert is not None:
        raise ConfigError("zone.self", "expected an https URL: zone.tls_cert is set")
    if (
        settings.zone_tls_cert is not None
        and settings.zone_ca_file is not None
        and settings.zone_client_cert is None
    ):
        raise ConfigError(
            "zone.client_cert",
            "required with zone.tls_cert and zone.ca_file: the siblings ask for one",
        )
