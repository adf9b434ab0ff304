"""Nodes of a zone speaking TLS to each other with the zone's private CA, as real processes:
verified certificates both ways, client certificates required, and what a node says when a
sibling refuses it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from edgecache.zone.protocol import image_path
from tests.conftest import MiB, UpstreamServer, free_port, random_bytes
from tests.fakeglance import FakeGlance
from tests.tlskit import CertFiles, HttpsDaemon, Pki, start_daemon, stop_daemon, wait_for_log
from tests.zonekit import ZONE_SECRET, download, metric, signed


@dataclass
class ZonePki:
    pki: Pki
    ca: trustme.CA
    ca_file: Path

    def issue(self, name: str) -> CertFiles:
        return self.pki.issue(name, "localhost", ca=self.ca)

    def client(self, cert: CertFiles | None) -> ssl.SSLContext:
        """A client that trusts the zone's CA and presents `cert`, if any."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if cert is not None:
            context.load_cert_chain(cert.cert, cert.key)
        return context


@pytest.fixture
def zone_pki(tmp_path: Path) -> ZonePki:
    pki = Pki(tmp_path / "pki")
    ca = trustme.CA(organization_name="Zone CA")
    return ZonePki(pki, ca, pki.write_ca(ca, "zone-ca.pem"))


@pytest.fixture
async def daemons() -> AsyncIterator[list[HttpsDaemon]]:
    started: list[HttpsDaemon] = []
    yield started
    for daemon in started:
        await stop_daemon(daemon)


@dataclass(frozen=True)
class TlsNode:
    name: str
    port: int
    cert: CertFiles

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def zone_table(self, zone_pki: ZonePki, peers: list[str]) -> dict[str, object]:
        """[zone] of a node that serves its zone listener over TLS, requires client
        certificates issued by the zone's CA and presents its own."""
        return {
            "peers": peers,
            "self": self.url,
            "secret": ZONE_SECRET,
            "listen": f"127.0.0.1:{self.port}",
            "ca_file": str(zone_pki.ca_file),
            "tls_cert": str(self.cert.cert),
            "tls_key": str(self.cert.key),
            "client_cert": str(self.cert.cert),
            "client_key": str(self.cert.key),
        }


async def start_tls_zone(
    names: list[str],
    zone_pki: ZonePki,
    upstream: str,
    workdir: Path,
    daemons: list[HttpsDaemon],
) -> dict[str, tuple[TlsNode, HttpsDaemon]]:
    nodes = [TlsNode(name, free_port(), zone_pki.issue(name)) for name in names]
    peers = [node.url for node in nodes]
    started = {}
    for node in nodes:
        config = {"zone": node.zone_table(zone_pki, peers)}
        daemon = await start_daemon(workdir, upstream, config, None, name=node.name)
        daemons.append(daemon)
        started[node.name] = (node, daemon)
    return started


def exchange(port: int, context: ssl.SSLContext, path: str) -> bytes:
    """Over a connection made with `context` (an ssl.SSLError if the handshake is refused), a
    signed GET of `path`, and all that the zone listener sends back."""
    lines = [f"GET {path} HTTP/1.1", "Host: localhost", "Connection: close"]
    node = f"https://localhost:{port}"
    lines += [f"{name}: {value}" for name, value in signed(node, path).items()]
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while piece := tls.recv(1 << 20):
            received += piece
        return received


async def test_a_node_takes_an_image_from_its_sibling_over_verified_tls(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    zone_pki: ZonePki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(3 * MiB), owner="p1")
    zone = await start_tls_zone(["a", "b"], zone_pki, upstream_server.url, tmp_path, daemons)
    (_, a), (_, b) = zone["a"], zone["b"]
    assert await download(a.url, image, token) == image.data  # a asked b (over TLS): none
    assert await download(b.url, image, token) == image.data

    assert glance.data_requests[image.id] == 1
    assert await metric(b.url, "edgecache_sibling_fetched_bytes_total") == len(image.data)
    assert await metric(a.url, "edgecache_sibling_served_bytes_total") == len(image.data)
    assert await metric(a.url, 'edgecache_sibling_lookups_total{result="miss"}') == 1
    for daemon in (a, b):
        assert "WARNING" not in daemon.log()


async def test_the_zone_listener_refuses_clients_without_a_certificate_of_the_zones_ca(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    zone_pki: ZonePki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    image = glance.add_image(random_bytes(MiB), owner="p1")
    zone = await start_tls_zone(["a"], zone_pki, upstream_server.url, tmp_path, daemons)
    node, daemon = zone["a"]
    assert await download(daemon.url, image, token) == image.data
    path = image_path(image.id)

    member = zone_pki.client(zone_pki.issue("member"))
    no_certificate = zone_pki.client(None)
    stranger = zone_pki.client(zone_pki.pki.issue("stranger", "localhost"))  # the region's CA
    for context in (member, no_certificate, stranger):
        context.maximum_version = ssl.TLSVersion.TLSv1_2  # the verdict within the handshake
    answer = await asyncio.to_thread(exchange, node.port, member, path)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(image.data)
    for refused in (no_certificate, stranger):
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(exchange, node.port, refused, path)
        # Over TLS 1.3 the client's handshake ends before the server's: it hears nothing.
        refused.maximum_version = ssl.TLSVersion.TLSv1_3
        answer = b""
        with contextlib.suppress(ConnectionResetError, ssl.SSLEOFError):
            answer = await asyncio.to_thread(exchange, node.port, refused, path)
        assert answer == b""


async def test_a_node_refused_by_a_sibling_says_once_which_setting_to_fix(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    zone_pki: ZonePki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    """A node that trusts the zone's CA but has no client certificate: the sibling refuses
    it, it says so in one sentence, and boots go on from the region."""
    token = glance.add_project("p1")
    images = [glance.add_image(random_bytes(MiB), owner="p1") for _ in range(2)]
    zone = await start_tls_zone(["a"], zone_pki, upstream_server.url, tmp_path, daemons)
    sibling, holder = zone["a"]
    for image in images:
        assert await download(holder.url, image, token) == image.data
    me = f"http://127.0.0.1:{free_port()}"
    config = {
        "zone": {
            "peers": [sibling.url, me],
            "self": me,
            "secret": ZONE_SECRET,
            "listen": me.removeprefix("http://"),
            "ca_file": str(zone_pki.ca_file),
        }
    }
    lacking = await start_daemon(tmp_path, upstream_server.url, config, None, name="lacking")
    daemons.append(lacking)
    for image in images:
        assert await download(lacking.url, image, token) == image.data
        assert glance.data_requests[image.id] == 2

    warnings = [line for line in lacking.log().splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert f"Sibling {sibling.url} cannot be asked for images over TLS: " in warnings[0]
    assert "set zone.client_cert and zone.client_key" in warnings[0]
    assert await metric(lacking.url, 'edgecache_sibling_lookups_total{result="error"}') == 2


async def test_sighup_rotates_the_zone_listeners_certificate(
    upstream_server: UpstreamServer,
    zone_pki: ZonePki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    zone = await start_tls_zone(["a"], zone_pki, upstream_server.url, tmp_path, daemons)
    node, daemon = zone["a"]
    member = zone_pki.client(zone_pki.issue("member"))
    assert await presented_certificate(node.port, member) == node.cert.der()

    new = zone_pki.issue("a")  # same paths, new certificate
    daemon.process.send_signal(signal.SIGHUP)
    await wait_for_log(daemon, "TLS certificate of the zone listener reloaded")
    assert await presented_certificate(node.port, member) == new.der() != node.cert.der()


async def presented_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return der
