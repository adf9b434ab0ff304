"""Why an upstream request failed, in words an operator understands, counted by reason.

TLS failures (a certificate that does not verify, an expired one, a hostname mismatch, a
client certificate the server refused) are logged as one ERROR line per endpoint and cause
until the endpoint answers again; every failure is counted in
`edgecache_upstream_failures_total{reason}`, and its sentence becomes the uplink's reason.
The words alone (FailureDescriber) also say why a sibling of the zone cannot be asked
(edgecache.zone.siblings).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from edgecache.metrics import Metrics
from edgecache.tls import ClientTls
from edgecache.upstream.certificates import PeerCertificate, fetch_peer_certificate

log = logging.getLogger(__name__)

# OpenSSL's X509_V_ERR_* codes for the causes operators meet
_EXPIRED = 10
_HOSTNAME_MISMATCH = 62
# OpenSSL alert reasons a server sends when it will not take the client's certificate
_CLIENT_CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_REVOKED",
    "ACCESS_DENIED",
    "HANDSHAKE_FAILURE",
)


@dataclass(frozen=True)
class Failure:
    reason: str  # the metric's label
    sentence: str

    @property
    def is_tls(self) -> bool:
        return self.reason.startswith("tls_")


class FailureExplainer:
    def __init__(self, describer: FailureDescriber, metrics: Metrics) -> None:
        self._describer = describer
        self._metrics = metrics
        self._reported: dict[str, Failure] = {}

    async def explain(self, endpoint: str, exc: BaseException) -> Failure:
        """Describe and count one failure; a new TLS cause of an endpoint is logged (ERROR)."""
        known = self._reported.get(endpoint)
        failure = await self._describer.describe(endpoint, exc, known)
        self._count(endpoint, failure)
        return failure

    def unavailable(self, endpoint: str, status: int) -> Failure:
        failure = Failure("unavailable", f"the server at {endpoint} answered {status}")
        self._count(endpoint, failure)
        return failure

    def answered(self, endpoint: str) -> None:
        """The endpoint answered: its next TLS failure is news again."""
        self._reported.pop(endpoint, None)

    def _count(self, endpoint: str, failure: Failure) -> None:
        self._metrics.upstream_failures.labels(failure.reason).inc()
        if not failure.is_tls or self._reported.get(endpoint) == failure:
            return
        self._reported[endpoint] = failure
        log.error(
            "%s. Requests that need it fail until this is fixed.",
            failure.sentence[0].upper() + failure.sentence[1:],
        )


class FailureDescriber:
    """A failed request to a server in words; for TLS, which setting of `section` to fix."""

    def __init__(
        self,
        *,
        context: ssl.SSLContext,
        section: str,
        has_client_certificate: bool,
        timeout: float,
    ) -> None:
        self._context = context
        self._section = section
        self._has_client_certificate = has_client_certificate
        self._timeout = timeout

    @classmethod
    def of(cls, tls: ClientTls, context: ssl.SSLContext, timeout: float) -> FailureDescriber:
        """For the servers reached with the settings `tls` ([upstream], [keystone], [zone])."""
        return cls(
            context=context,
            section=tls.section,
            has_client_certificate=tls.client_cert is not None,
            timeout=timeout,
        )

    async def describe(self, endpoint: str, exc: BaseException, known: Failure | None) -> Failure:
        """`known`: the failure described last for this endpoint, if any (a certificate
        failure of the same kind is not looked into again)."""
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            code = getattr(exc.certificate_error, "verify_code", None)
            reason = {_EXPIRED: "tls_expired", _HOSTNAME_MISMATCH: "tls_hostname"}.get(
                code or 0, "tls_untrusted"
            )
            if known is not None and known.reason == reason:
                return known  # described already: no second handshake for every request
            peer = await self._peer(endpoint)
            return Failure(reason, self._certificate_sentence(endpoint, reason, exc, peer))
        if isinstance(exc, aiohttp.ClientSSLError):
            return self._handshake_failure(endpoint, exc.os_error)
        if _hung_up(exc) and endpoint.startswith("https:"):
            if known is not None and known.reason == "tls_client_certificate":
                return known
            refused = await self._refused_after_handshake(endpoint)
            if refused is not None:
                return refused
            if isinstance(exc, aiohttp.ServerDisconnectedError):
                return Failure(
                    "disconnected",
                    f"the server at {endpoint} closed the connection without answering",
                )
        if isinstance(exc, aiohttp.ClientConnectorError):
            why = (exc.os_error.strerror or "no reason given").lower()
            return Failure("connect", f"could not connect to {endpoint}: {why}")
        if isinstance(exc, TimeoutError):
            return Failure("timeout", f"the server at {endpoint} did not answer in time")
        return Failure("broken", f"the connection to {endpoint} broke ({type(exc).__name__})")

    def _certificate_sentence(
        self,
        endpoint: str,
        reason: str,
        exc: aiohttp.ClientConnectorCertificateError,
        peer: PeerCertificate | None,
    ) -> str:
        host = urlsplit(endpoint).hostname or endpoint
        what = f"the TLS certificate of {endpoint}"
        if reason == "tls_expired":
            when = f" on {peer.expiry}" if peer else ""
            detail = f" (subject {peer.subject})" if peer else ""
            return f"{what} expired{when}{detail}"
        if reason == "tls_hostname":
            names = ", ".join(peer.names) if peer and peer.names else "other names"
            detail = f" ({peer.describe()})" if peer else ""
            return f"{what} is not valid for {host}: it names {names}{detail}"
        message = getattr(exc.certificate_error, "verify_message", "") or "does not verify"
        detail = f" ({peer.describe()})" if peer else ""
        return (
            f"{what} is not trusted: {message}{detail}; "
            f"{self._section}.ca_file must be the CA that issued it"
        )

    def _handshake_failure(self, endpoint: str, error: OSError) -> Failure:
        reason = getattr(error, "reason", None) or ""
        if any(alert in reason for alert in _CLIENT_CERTIFICATE_ALERTS):
            return self._client_certificate_refused(endpoint, reason)
        words = reason.replace("_", " ").lower() or (error.strerror or "").lower()
        return Failure("tls_handshake", f"the TLS handshake with {endpoint} failed: {words}")

    def _client_certificate_refused(self, endpoint: str, alert: str) -> Failure:
        said = f" (it said: {alert.replace('_', ' ').lower()})" if alert else ""
        if self._has_client_certificate:
            sentence = f"the server at {endpoint} refused edgecache's TLS client certificate{said}"
        else:
            sentence = (
                f"the server at {endpoint} wants a TLS client certificate{said}; "
                f"set {self._section}.client_cert and {self._section}.client_key"
            )
        return Failure("tls_client_certificate", sentence)

    async def _peer(self, endpoint: str) -> PeerCertificate | None:
        host, port = _host_port(endpoint)
        return await fetch_peer_certificate(host, port, self._timeout)

    async def _refused_after_handshake(self, endpoint: str) -> Failure | None:
        """A server that hangs up right after a handshake, before answering a request, has
        refused the client certificate (TLS 1.3 tells the client only after the handshake)."""
        host, port = _host_port(endpoint)
        try:
            answer = await asyncio.to_thread(self._ask, host, port)
        except ssl.SSLError as exc:
            return self._handshake_failure(endpoint, exc)
        except OSError:
            return None
        return self._client_certificate_refused(endpoint, "") if not answer else None

    def _ask(self, host: str, port: int) -> bytes:
        request = f"GET /versions HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
        with (
            socket.create_connection((host, port), timeout=self._timeout) as raw,
            self._context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            try:
                tls.sendall(request)
                return tls.recv(1)
            except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
                return b""


def _hung_up(exc: BaseException) -> bool:
    """The server closed (or reset) a connection it had accepted, before answering."""
    return isinstance(exc, aiohttp.ServerDisconnectedError) or (
        isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)
    )


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
