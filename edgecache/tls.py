"""SSL contexts from the settings: the upstream's, Keystone's, the zone's (asking siblings and
answering them), and edgecache's own endpoint's.

Contexts are built once at start-up; a certificate and key that do not belong together (or any
other file OpenSSL refuses) is a ConfigError naming the key, like every other bad setting.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from edgecache.config import ConfigError, Settings

log = logging.getLogger(__name__)

# Mozilla's "intermediate" choice for TLS 1.2 (TLS 1.3 suites are OpenSSL's, all good):
# forward secrecy and AEAD ciphers only.
_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)


@dataclass(frozen=True)
class ClientTls:
    """How edgecache reaches one kind of server over HTTPS ([upstream], [keystone], [zone])."""

    section: str
    ca_file: Path | None
    client_cert: Path | None
    client_key: Path | None
    verify: bool

    @classmethod
    def upstream(cls, settings: Settings) -> ClientTls:
        return cls(
            "upstream",
            settings.upstream_ca_file,
            settings.upstream_client_cert,
            settings.upstream_client_key,
            settings.upstream_verify,
        )

    @classmethod
    def keystone(cls, settings: Settings) -> ClientTls:
        return cls(
            "keystone",
            settings.keystone_ca_file,
            settings.keystone_client_cert,
            settings.keystone_client_key,
            settings.keystone_verify,
        )

    @classmethod
    def zone(cls, settings: Settings) -> ClientTls:
        """The siblings: always verified, against the zone's CA if one is set."""
        return cls(
            "zone",
            settings.zone_ca_file,
            settings.zone_client_cert,
            settings.zone_client_key,
            verify=True,
        )


@dataclass(frozen=True)
class ServerTls:
    """How one of edgecache's listeners serves HTTPS ([server] for clients, [zone] for siblings)."""

    section: str
    cert: Path | None
    key: Path | None
    client_ca: Path | None  # then client certificates are required
    client_ca_setting: str
    description: str  # for log lines

    @classmethod
    def server(cls, settings: Settings) -> ServerTls:
        return cls(
            "server",
            settings.tls_cert,
            settings.tls_key,
            settings.tls_client_ca,
            "server.tls_client_ca",
            "TLS certificate",
        )

    @classmethod
    def zone(cls, settings: Settings) -> ServerTls:
        return cls(
            "zone",
            settings.zone_tls_cert,
            settings.zone_tls_key,
            settings.zone_ca_file,
            "zone.ca_file",
            "TLS certificate of the zone listener",
        )

    @classmethod
    def all(cls, settings: Settings) -> tuple[ServerTls, ServerTls]:
        """The clients' listener's, then the zone listener's."""
        return cls.server(settings), cls.zone(settings)


def client_context(tls: ClientTls) -> ssl.SSLContext:
    """Verifying (hostname too) against `ca_file`, else the system's CAs; with a client
    certificate when one is set."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.ca_file is not None:
        _load_ca(context, f"{tls.section}.ca_file", tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.client_cert is not None:
        try:
            context.load_cert_chain(tls.client_cert, tls.client_key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{tls.section}.client_key",
                f"{tls.client_cert} and its key cannot be used together ({_reason(exc)})",
            ) from exc
    return context


def warn_if_unverified(tls: ClientTls, endpoints: tuple[str, ...]) -> None:
    https = [url for url in endpoints if url.startswith("https:")]
    if not tls.verify and https:
        log.warning(
            "TLS certificates of %s are NOT verified (%s.verify = false): anyone on the path "
            "can impersonate it; use this only in a lab.",
            ", ".join(https),
            tls.section,
        )


def server_context(tls: ServerTls) -> ssl.SSLContext | None:
    """The context of one of edgecache's own HTTPS listeners, or None for plain HTTP."""
    if tls.cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    load_server_certificate(context, tls)
    if tls.client_ca is not None:
        _load_ca(context, tls.client_ca_setting, tls.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_server_certificate(context: ssl.SSLContext, tls: ServerTls) -> None:
    """(Re)load the listener's certificate and key; only handshakes after this one see it.

    The pair is tried on a scratch context first: a failed load into the live one could leave
    it with the new certificate and no key, and every later handshake would fail.
    """
    assert tls.cert is not None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.cert, tls.key)
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{tls.section}.tls_key",
            f"{tls.cert} and its key cannot be used together ({_reason(exc)})",
        ) from exc


def check(settings: Settings) -> None:
    """Build every context once, so a file OpenSSL refuses stops start-up (ConfigError)."""
    client_context(ClientTls.upstream(settings))
    client_context(ClientTls.keystone(settings))
    client_context(ClientTls.zone(settings))
    for listener in ServerTls.all(settings):
        server_context(listener)


def _load_ca(context: ssl.SSLContext, key: str, path: Path) -> None:
    try:
        if path.is_dir():
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(key, f"{path} cannot be used as a CA ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.replace("_", " ").lower()
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
