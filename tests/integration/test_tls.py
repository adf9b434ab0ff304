"""HTTPS on both sides with a private CA: the real Glance served by gunicorn over TLS,
edgecache verifying it with `[upstream] ca_file` and serving HTTPS itself, the real `glance`
CLI talking to edgecache with `--os-cacert`."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.integration.conftest import World, glance_as, running
from tests.stack.edgecache_daemon import QUICK_SETTINGS, EdgecacheDaemon


@pytest.fixture(scope="module")
def pki(integ_dir: Path) -> Path:
    """The region's CA, and certificates for 127.0.0.1 (Glance's and edgecache's)."""
    directory = integ_dir / "pki"
    directory.mkdir()
    ca = trustme.CA(organization_name="Region CA")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name in ("glance", "edgecache"):
        leaf = ca.issue_cert("127.0.0.1", common_name=name)
        (directory / f"{name}.pem").write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    return directory


@pytest.fixture(scope="module")
def https_edgecache(world: World, pki: Path, integ_dir: Path) -> Iterator[EdgecacheDaemon]:
    glance = world.stack.serve_glance_over_tls(
        pki / "glance.pem", pki / "glance.key", pki / "ca.pem"
    )
    settings = {
        **QUICK_SETTINGS,
        "upstream": {**QUICK_SETTINGS["upstream"], "ca_file": str(pki / "ca.pem")},
        "server": {"tls_cert": str(pki / "edgecache.pem"), "tls_key": str(pki / "edgecache.key")},
    }
    daemon = EdgecacheDaemon(
        integ_dir / "edgecache-tls",
        glance,
        settings=settings,
        tls=ssl.create_default_context(cafile=str(pki / "ca.pem")),
    )
    yield from running(daemon)


def test_glance_cli_downloads_over_https_through_edgecache_from_glance_over_https(
    world: World, https_edgecache: EdgecacheDaemon, pki: Path, tmp_path: Path
) -> None:
    assert https_edgecache.url.startswith("https://")
    assert https_edgecache.upstream.startswith("https://")
    image = world.new_image("private")
    before = https_edgecache.metrics()
    for attempt in (1, 2):
        out = tmp_path / f"image-{attempt}.img"
        glance_as(
            world.stack,
            world.a,
            "--os-cacert",
            str(pki / "ca.pem"),
            "image-download",
            "--file",
            str(out),
            image.id,
            image_url=https_edgecache.url,
        )
        assert out.read_bytes() == image.data, attempt
    after = https_edgecache.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('edgecache_data_requests_total{result="miss"}') == 1
    assert delta('edgecache_data_requests_total{result="hit"}') == 1
    assert delta("edgecache_fetched_bytes_total") == len(image.data)
    assert https_edgecache.health()["uplink"] == "up"


def test_the_glance_cli_refuses_edgecache_without_the_ca(
    world: World, https_edgecache: EdgecacheDaemon
) -> None:
    result = glance_as(
        world.stack, world.a, "image-list", image_url=https_edgecache.url, check=False
    )
    assert result.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.stderr + result.stdout
