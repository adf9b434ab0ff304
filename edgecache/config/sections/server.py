"""[server]: where and how edgecache serves its clients, and how it logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgecache.config.declaration import Section
from edgecache.config.kinds import Choice, Listen, Location, Seconds
from edgecache.logs import LOG_FORMATS

SERVER = Section("server")


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    listen: tuple[str, int] = SERVER.setting(
        Listen(), ("127.0.0.1", 9292), flag="HOST:PORT to serve on"
    )
    """HOST:PORT to listen on. nova-compute's [glance] endpoint_override points here."""

    log_level: str = SERVER.setting(
        Choice(("debug", "info", "warning", "error"), ignore_case=True), "info"
    )
    """debug, info, warning or error."""

    log_format: str = SERVER.setting(
        Choice(LOG_FORMATS), "text", flag="log lines for people (text) or for log shippers (json)"
    )
    """text (for people) or json (one object per line, for log shippers)."""

    shutdown_timeout: float = SERVER.setting(Seconds(), 30.0)
    """On SIGTERM: stop accepting, then give transfers in flight this many seconds to finish."""

    client_idle_timeout: float = SERVER.setting(Seconds(), 60.0)
    """Seconds a client connection may go without a complete request (idle between requests, or
    sending its headers too slowly) before it is closed: slow or stuck clients cannot pile up."""

    admin_socket_path: Path | None = SERVER.setting(
        Location(), None, key="admin_socket", example=Path("/run/edgecache/admin.sock")
    )
    """The operator's socket (edgecache status, cache list/evict/verify, warm --pin); mode 0660,
    no token needed. Default: admin.sock in the cache dir."""

    tls_cert: Path | None = SERVER.pem_file(
        "certificate", suggest="/etc/edgecache/tls/edgecache.pem"
    )
    """HTTPS on the listen address (and only HTTPS there): the certificate (with its chain), PEM.
    TLS 1.2 at least, forward-secret AEAD ciphers. `systemctl reload edgecache` (SIGHUP) re-reads
    it and its key without a restart: new connections get the new certificate, transfers in
    flight continue. "" serves plain HTTP (e.g. behind an HAProxy that ends TLS)."""

    tls_key: Path | None = SERVER.private_key(
        of="tls_cert", suggest="/etc/edgecache/tls/edgecache.key"
    )
    """The certificate's private key (PEM), unless tls_cert's file holds it too."""

    tls_client_ca: Path | None = SERVER.pem_file("CA")
    """A CA (file or directory): when set, every client must present a certificate it issued."""

    @property
    def listen_host(self) -> str:
        return self.listen[0]

    @property
    def listen_port(self) -> int:
        return self.listen[1]
