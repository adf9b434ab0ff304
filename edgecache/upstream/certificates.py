"""What a server's certificate says, fetched without verifying it: for explaining why it failed.

A handshake that fails verification leaves nothing to read; a second handshake that does not
verify gets the certificate so the operator learns its subject, names and expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509


@dataclass(frozen=True)
class PeerCertificate:
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_after: datetime

    def describe(self) -> str:
        return f"subject {self.subject}, issued by {self.issuer}, valid until {self.expiry}"

    @property
    def expiry(self) -> str:
        return self.not_after.strftime("%Y-%m-%d %H:%M UTC")


async def fetch_peer_certificate(host: str, port: int, within: float) -> PeerCertificate | None:
    """The certificate `host:port` presents, or None if it cannot be had."""
    with contextlib.suppress(OSError, ValueError):
        der = await asyncio.to_thread(_handshake_unverified, host, port, within)
        if der is not None:
            return parse_certificate(der)
    return None


def parse_certificate(der: bytes) -> PeerCertificate:
    cert = x509.load_der_x509_certificate(der)
    names: list[str] = []
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names.extend(san.get_values_for_type(x509.DNSName))
        names.extend(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    return PeerCertificate(
        subject=cert.subject.rfc4514_string() or "(empty)",
        issuer=cert.issuer.rfc4514_string() or "(empty)",
        names=tuple(names),
        not_after=cert.not_valid_after_utc,
    )


def certificate_file_summary(path: Path) -> str:
    """Subject and expiry of the first certificate of a PEM file, for a log line."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return "unreadable"
    subject = cert.subject.rfc4514_string() or "(empty)"
    return f"subject {subject}, valid until {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def _handshake_unverified(host: str, port: int, timeout: float) -> bytes | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    server_name = None if _is_ip(host) else host
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        return tls.getpeercert(binary_form=True)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
