"""edgecache's own HTTPS endpoint, as real processes: hits and Range over TLS, client
certificates, certificate rotation on SIGHUP, and a cloudlet reaching its edge site over TLS."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tests.conftest import MiB, UpstreamServer, random_bytes
from tests.fakeglance import FakeGlance
from tests.tlskit import (
    LONG_EXPIRED,
    CertFiles,
    HttpsDaemon,
    Pki,
    https_glance,
    start_daemon,
    stop_daemon,
    wait_for_log,
)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
async def daemons() -> AsyncIterator[list[HttpsDaemon]]:
    started: list[HttpsDaemon] = []
    yield started
    for daemon in started:
        await stop_daemon(daemon)


def server_tables(cert: CertFiles, **extra: object) -> dict[str, dict[str, object]]:
    return {"server": {"tls_cert": str(cert.cert), "tls_key": str(cert.key), **extra}}


def session(context: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


def peer_certificate(response: aiohttp.ClientResponse) -> bytes:
    assert response.connection is not None
    assert response.connection.transport is not None
    tls = response.connection.transport.get_extra_info("ssl_object")
    der: bytes = tls.getpeercert(binary_form=True)
    return der


async def handshake_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return der


async def test_https_serves_hits_and_ranges_byte_exact_and_links_say_https(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    pki: Pki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(9 * MiB + 123)  # more than two of the pieces written over TLS
    image = glance.add_image(data, owner="p1")
    context = pki.client_context()
    tables = server_tables(pki.issue("edgecache", "localhost"))
    daemon = await start_daemon(tmp_path, upstream_server.url, tables, context)
    daemons.append(daemon)
    headers = {"X-Auth-Token": token}
    async with session(context) as client:
        for source in ("fill", "cache", "cache"):
            async with client.get(f"{daemon.url}/v2/images/{image.id}/file", headers=headers) as r:
                assert (r.status, r.headers["X-Edgecache-Source"]) == (200, source)
                assert await r.read() == data
        ranged = {**headers, "Range": "bytes=1000-5000000"}
        async with client.get(f"{daemon.url}/v2/images/{image.id}/file", headers=ranged) as r:
            assert (r.status, r.headers["X-Edgecache-Source"]) == (206, "cache")
            assert await r.read() == data[1000:5000001]
        async with client.get(f"{daemon.url}/versions") as r:
            links = [link["href"] for v in (await r.json())["versions"] for link in v["links"]]
        assert links
        assert all(href.startswith(f"https://localhost:{daemon.port}/") for href in links)
    assert glance.data_requests[image.id] == 1
    async with aiohttp.ClientSession() as plain:  # HTTPS only on the listen address
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(f"http://localhost:{daemon.port}/healthz") as r:
                await r.read()


async def test_a_client_certificate_is_required_when_tls_client_ca_is_set(
    upstream_server: UpstreamServer, pki: Pki, tmp_path: Path, daemons: list[HttpsDaemon]
) -> None:
    nova = pki.issue("nova-compute-1", "nova-compute-1.example")
    with_cert = pki.client_context(nova)
    tables = server_tables(pki.issue("edgecache", "localhost"), tls_client_ca=str(pki.ca_file))
    daemon = await start_daemon(tmp_path, upstream_server.url, tables, with_cert)
    daemons.append(daemon)
    async with session(with_cert) as client, client.get(f"{daemon.url}/healthz") as r:
        assert r.status == 200
    async with session(pki.client_context()) as client:
        with pytest.raises(aiohttp.ClientError):
            async with client.get(f"{daemon.url}/healthz") as r:
                await r.read()


async def test_sighup_rotates_the_certificate_without_cutting_a_transfer_in_flight(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    pki: Pki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(64 * MiB)  # far more than the socket buffers hold
    image = glance.add_image(data, owner="p1")
    old = pki.issue("edgecache", "localhost")
    context = pki.client_context()
    daemon = await start_daemon(tmp_path, upstream_server.url, server_tables(old), context)
    daemons.append(daemon)
    url = f"{daemon.url}/v2/images/{image.id}/file"
    headers = {"X-Auth-Token": token}
    async with session(context) as client:
        async with client.get(url, headers=headers) as r:
            assert await r.read() == data  # now a hit
        async with client.get(url, headers=headers) as in_flight:
            received = await in_flight.content.readexactly(MiB)
            assert peer_certificate(in_flight) == old.der()

            new = pki.issue("edgecache", "localhost")  # same paths, new certificate
            assert new.der() != old.der()
            daemon.process.send_signal(signal.SIGHUP)
            await wait_for_log(daemon, "TLS certificate reloaded")
            assert await handshake_certificate(daemon.port, context) == new.der()

            received += await in_flight.read()
            assert in_flight.headers["X-Edgecache-Source"] == "cache"
        assert received == data
    assert daemon.process.returncode is None


async def test_a_certificate_that_cannot_be_loaded_on_sighup_leaves_the_old_one_in_use(
    upstream_server: UpstreamServer, pki: Pki, tmp_path: Path, daemons: list[HttpsDaemon]
) -> None:
    old = pki.issue("edgecache", "localhost")
    context = pki.client_context()
    daemon = await start_daemon(tmp_path, upstream_server.url, server_tables(old), context)
    daemons.append(daemon)
    other = pki.issue("unrelated", "localhost")
    old.cert.write_bytes(other.cert.read_bytes())  # a renewal that forgot the key
    daemon.process.send_signal(signal.SIGHUP)
    await wait_for_log(daemon, "The TLS certificate was not reloaded")
    assert "cannot be used together" in daemon.log()
    assert await handshake_certificate(daemon.port, context) == old.der()


async def test_a_bad_handshake_does_not_disturb_other_transfers(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    pki: Pki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(32 * MiB)
    image = glance.add_image(data, owner="p1")
    context = pki.client_context()
    tables = server_tables(pki.issue("edgecache", "localhost"))
    daemon = await start_daemon(tmp_path, upstream_server.url, tables, context)
    daemons.append(daemon)
    url = f"{daemon.url}/v2/images/{image.id}/file"
    async with session(context) as client:
        async with client.get(url, headers={"X-Auth-Token": token}) as in_flight:
            received = await in_flight.content.readexactly(MiB)
            for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
                assert await send_and_see_closed(daemon.port, garbage)
            stranger = ssl.create_default_context()  # trusts no test CA: refuses the server
            with pytest.raises(ssl.SSLCertVerificationError):
                await handshake_certificate(daemon.port, stranger)
            received += await in_flight.read()
        assert received == data
        async with client.get(f"{daemon.url}/healthz") as r:
            assert r.status == 200


async def send_and_see_closed(port: int, garbage: bytes) -> bool:
    """Send bytes that are no TLS handshake; True once the server has hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(garbage)
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    except (OSError, ConnectionResetError):
        answer = b""
    writer.close()
    return b"HTTP/1.1 200" not in answer


async def test_a_cloudlet_reaches_its_edge_site_over_verified_tls(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    pki: Pki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(5 * MiB)
    image = glance.add_image(data, owner="p1")
    context = pki.client_context()
    edge_tables = server_tables(pki.issue("edge-site", "localhost"))
    edge = await start_daemon(tmp_path, upstream_server.url, edge_tables, context, name="edge")
    daemons.append(edge)
    cloudlet_tables = {"upstream": {"ca_file": str(pki.ca_file)}}
    cloudlet = await start_daemon(tmp_path, edge.url, cloudlet_tables, None, name="cloudlet")
    daemons.append(cloudlet)
    async with aiohttp.ClientSession() as client:
        for source in ("fill", "cache"):
            async with client.get(
                f"{cloudlet.url}/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
            ) as r:
                assert (r.status, r.headers["X-Edgecache-Source"]) == (200, source)
                assert await r.read() == data
    async with session(context) as client, client.get(f"{edge.url}/metrics") as r:
        assert 'edgecache_data_requests_total{result="miss"} 1.0' in await r.text()
    assert glance.data_requests[image.id] == 1


async def test_edgecache_status_says_why_the_uplink_is_down(
    glance: FakeGlance, pki: Pki, tmp_path: Path, daemons: list[HttpsDaemon]
) -> None:
    expired = pki.issue("glance", "localhost", not_after=LONG_EXPIRED)
    async with https_glance(glance, expired) as url:
        tables = {"upstream": {"ca_file": str(pki.ca_file)}}
        daemon = await start_daemon(tmp_path, url, tables, None)
        daemons.append(daemon)
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{daemon.url}/versions") as r:
                assert r.status == 503
            async with client.get(f"{daemon.url}/healthz") as r:
                reason = (await r.json())["uplink_reason"]
        status = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edgecache", "status",
            "--socket", str(tmp_path / "edgecache" / "admin.sock"),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "EDGECACHE_CONFIG": ""},
        )  # fmt: skip
        out, _ = await status.communicate()
    assert status.returncode == 0
    assert reason == f"the TLS certificate of {url} expired on 2020-01-01 00:00 UTC " + (
        f"(subject {expired_subject(expired)})"
    )
    why = next(line for line in out.decode().splitlines() if line.startswith("why"))
    assert why.split(None, 1)[1] == reason
    assert "ERROR" in daemon.log()
    assert f"The TLS certificate of {url} expired on 2020-01-01 00:00 UTC" in daemon.log()


def expired_subject(cert: CertFiles) -> str:
    return x509.load_pem_x509_certificate(cert.cert.read_bytes()).subject.rfc4514_string()


async def test_warm_reaches_the_daemons_own_https_endpoint_by_its_pinned_certificate(
    glance: FakeGlance,
    upstream_server: UpstreamServer,
    pki: Pki,
    tmp_path: Path,
    daemons: list[HttpsDaemon],
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(2 * MiB)
    image = glance.add_image(data, owner="p1")
    tables = server_tables(pki.issue("edge.example", "edge.example"))  # not 127.0.0.1's name
    daemon = await start_daemon(tmp_path, upstream_server.url, tables, None, name="edge")
    daemons.append(daemon)
    warm = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgecache", "warm", image.id, "--token", token,
        "--config", str(tmp_path / "edge.toml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "EDGECACHE_CONFIG": ""},
    )  # fmt: skip
    out, _ = await warm.communicate()
    assert warm.returncode == 0, out.decode()
    assert "1 in the cache, 0 failed" in out.decode()
    assert glance.data_requests[image.id] == 1
