"""The upstream over verified TLS: it works, and every way it fails reads as a sentence."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from trustme import CA

from edgecache.authorization.keystone import service_keystone
from edgecache.config import Settings
from edgecache.metrics import Metrics
from tests.conftest import EdgecacheFactory, MiB, random_bytes
from tests.fakeglance import SERVICE_USER, FakeGlance
from tests.tlskit import LONG_EXPIRED, Pki, https_glance


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


async def failures(client: TestClient, reason: str) -> float:
    async with client.get("/metrics") as resp:
        text = await resp.text()
    match = re.search(
        rf'^edgecache_upstream_failures_total\{{reason="{reason}"\}} (\S+)$', text, re.MULTILINE
    )
    return float(match.group(1)) if match else 0.0


async def test_images_come_over_verified_tls_and_the_second_read_is_a_hit(
    glance: FakeGlance, pki: Pki, make_edgecache: EdgecacheFactory
) -> None:
    token = glance.add_project("p1")
    data = random_bytes(3 * MiB)
    image = glance.add_image(data, owner="p1")
    async with https_glance(glance, pki.issue("glance", "localhost")) as url:
        client = await make_edgecache(upstream=url, upstream_ca_file=pki.ca_file)
        for source in ("fill", "cache"):
            async with client.get(
                f"/v2/images/{image.id}/file", headers={"X-Auth-Token": token}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Edgecache-Source"] == source
                assert await resp.read() == data
    assert glance.data_requests[image.id] == 1


async def test_a_client_certificate_is_presented_when_the_region_asks(
    glance: FakeGlance, pki: Pki, make_edgecache: EdgecacheFactory
) -> None:
    client_cert = pki.issue("edge-site-1", "edge-site-1.example")
    async with https_glance(glance, pki.issue("glance", "localhost"), pki.ca_file) as url:
        client = await make_edgecache(
            upstream=url,
            upstream_ca_file=pki.ca_file,
            upstream_client_cert=client_cert.cert,
            upstream_client_key=client_cert.key,
        )
        async with client.get("/versions") as resp:
            assert resp.status == 200


async def test_verification_off_is_allowed_and_said_loudly(
    glance: FakeGlance,
    pki: Pki,
    make_edgecache: EdgecacheFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = pki.issue("glance", "elsewhere.example", ca=pki.ca.create_child_ca())
    async with https_glance(glance, stranger) as url:
        with caplog.at_level(logging.WARNING):
            client = await make_edgecache(upstream=url, upstream_verify=False)
            async with client.get("/versions") as resp:
                assert resp.status == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        f"TLS certificates of {url} are NOT verified (upstream.verify = false)" in w
        for w in warnings
    )


@pytest.mark.parametrize(
    ("case", "reason", "sentence"),
    [
        (
            "wrong CA",
            "tls_untrusted",
            r"the TLS certificate of https://localhost:\d+ is not trusted: unable to get local "
            r"issuer certificate \(subject CN=glance,.*, issued by .*O=Other CA, valid "
            r"until \d{4}-\d\d-\d\d \d\d:\d\d UTC\); upstream.ca_file must be the CA that "
            r"issued it",
        ),
        (
            "expired",
            "tls_expired",
            r"the TLS certificate of https://localhost:\d+ expired on 2020-01-01 00:00 UTC "
            r"\(subject CN=glance",
        ),
        (
            "wrong host",
            "tls_hostname",
            r"the TLS certificate of https://localhost:\d+ is not valid for localhost: it names "
            r"glance.region.example \(subject CN=glance",
        ),
        (
            "no client certificate",
            "tls_client_certificate",
            r"the server at https://localhost:\d+ wants a TLS client certificate; set "
            r"upstream.client_cert "
            r"and upstream.client_key",
        ),
        (
            "refused client certificate",
            "tls_client_certificate",
            r"the server at https://localhost:\d+ refused edgecache's TLS client certificate",
        ),
    ],
)
async def test_a_tls_failure_is_one_error_sentence_the_healthz_reason_and_a_metric(
    glance: FakeGlance,
    pki: Pki,
    make_edgecache: EdgecacheFactory,
    caplog: pytest.LogCaptureFixture,
    case: str,
    reason: str,
    sentence: str,
) -> None:
    server = pki.issue("glance", "localhost")
    client_ca: Path | None = None
    extra: dict[str, object] = {}
    if case == "wrong CA":
        server = pki.issue("glance", "localhost", ca=CA(organization_name="Other CA"))
    elif case == "expired":
        server = pki.issue("glance", "localhost", not_after=LONG_EXPIRED)
    elif case == "wrong host":
        server = pki.issue("glance", "glance.region.example")
    elif case == "no client certificate":
        client_ca = pki.ca_file
    else:
        client_ca = pki.ca_file
        stranger = pki.issue("edge-site-1", "edge-site-1.example", ca=CA())
        extra = {"upstream_client_cert": stranger.cert, "upstream_client_key": stranger.key}
    async with https_glance(glance, server, client_ca) as url:
        with caplog.at_level(logging.INFO):
            client = await make_edgecache(
                upstream=url, upstream_ca_file=pki.ca_file, failures_to_offline=1, **extra
            )
            async with client.get("/versions") as resp:
                assert resp.status == 503  # the uplink is down: nothing of the region's cached
            async with client.get("/healthz") as resp:
                health = await resp.json()
            assert health["uplink"] == "down"
            assert re.fullmatch(sentence + ".*", health["uplink_reason"])
            assert await failures(client, reason) >= 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert re.match(sentence, errors[0], re.IGNORECASE)
    assert errors[0][0].isupper()
    assert errors[0].endswith(". Requests that need it fail until this is fixed.")
    assert "Error(" not in errors[0]  # no Python reprs


async def test_links_say_https_when_the_proxy_in_front_ends_tls(edgecache: TestClient) -> None:
    async with edgecache.get("/versions", headers={"X-Forwarded-Proto": "https"}) as resp:
        links = [link["href"] for v in (await resp.json())["versions"] for link in v["links"]]
    assert links
    assert all(href.startswith("https://") for href in links)


async def test_keystone_is_verified_with_its_own_ca_setting(
    glance: FakeGlance,
    pki: Pki,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = glance.add_project("p1")
    async with https_glance(glance, pki.issue("keystone", "localhost")) as url:
        credentials = {
            "keystone_url": f"{url}/v3",
            "keystone_username": SERVICE_USER[0],
            "keystone_password": SERVICE_USER[1],
            "upstream_ca_file": pki.ca_file,  # the upstream's CA says nothing about Keystone's
        }
        for keystone_ca in (pki.ca_file, None):
            settings = make_settings(**credentials, keystone_ca_file=keystone_ca)
            assert settings.service_credentials is not None
            keystone, session = service_keystone(settings.service_credentials, settings, Metrics())
            async with session:
                with caplog.at_level(logging.WARNING):
                    info = await keystone.validate(token)
            if keystone_ca is not None:
                assert info is not None
                assert info.project_id == "p1"
            else:
                assert info is None
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warning.startswith(
        f"could not validate callers' tokens with Keystone at {url}/v3 (the TLS certificate of "
        f"{url}/v3 is not trusted: unable to get local issuer certificate (subject CN=keystone"
    )
    assert "keystone.ca_file must be the CA that issued it); for the next" in warning
