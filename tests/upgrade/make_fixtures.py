"""Make the upgrade fixtures: `python -m tests.upgrade.make_fixtures` from the repository.

For each release in releases.RELEASES: check its commit out into a temporary worktree, run
that release's daemon (its own code, this venv's packages) against the fake Glance, boot the
fixtures' images with the fixtures' token (record, then data: what nova does), stop it with
SIGTERM as systemd would, and archive the cache directory it left as caches/<release>.tar.gz.
Run it again only to add a release; the archives are what the tests use.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import aiohttp

from tests.conftest import UpstreamServer, free_port
from tests.fakeglance import SERVICE_USER
from tests.upgrade.releases import BOOT_TOKEN, CACHES, RELEASES, Release, glance_of_the_fixtures

REPOSITORY = Path(__file__).resolve().parents[2]


def make(release: Release, scratch: Path) -> None:
    source = scratch / "source"
    git = ["git", "-C", str(REPOSITORY), "worktree"]
    subprocess.run([*git, "add", "--detach", str(source), release.commit], check=True)
    try:
        asyncio.run(_run_release(release, source, scratch / "cache"))
    finally:
        subprocess.run([*git, "remove", "--force", str(source)], check=True)


async def _run_release(release: Release, source: Path, cache: Path) -> None:
    glance = glance_of_the_fixtures()
    upstream = UpstreamServer(glance)
    await upstream.start()
    port = free_port()
    config = cache.parent / "edgecache.toml"
    keystone = (
        f'[keystone]\nauth_url = "{upstream.url}/v3"\nusername = "{SERVICE_USER[0]}"\n'
        f'password = "{SERVICE_USER[1]}"\nproject_name = "service"\n'
        if release.keystone
        else ""
    )
    config.write_text(
        f'[upstream]\nurl = "{upstream.url}"\n[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[cache]\ndir = "{cache}"\n{keystone}'
    )
    daemon = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "edgecache", "serve", "--config", str(config)),
        env={**os.environ, "PYTHONPATH": str(source)},
        cwd=source,  # `python -m` puts the working directory first on the path
    )
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_serving(session, f"http://127.0.0.1:{port}/healthz")
            headers = {"X-Auth-Token": BOOT_TOKEN}
            for image in glance.images.values():
                for path in (f"/v2/images/{image.id}", f"/v2/images/{image.id}/file"):
                    url = f"http://127.0.0.1:{port}{path}"
                    async with session.get(url, headers=headers) as response:
                        assert response.status == 200, (path, response.status)
                        body = await response.read()
                assert body == image.data
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), timeout=30)
        await upstream.stop()
    for transient in ("admin.sock",):
        (cache / transient).unlink(missing_ok=True)
    CACHES.mkdir(exist_ok=True)
    with tarfile.open(release.archive, "w:gz") as archive:
        archive.add(cache, arcname="cache")
    print(f"{release.archive}: the cache {release.name} left")


async def _wait_serving(session: aiohttp.ClientSession, url: str) -> None:
    for _ in range(200):
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the daemon did not answer {url}")


def main() -> None:
    for release in RELEASES:
        with tempfile.TemporaryDirectory() as scratch:
            make(release, Path(scratch))


if __name__ == "__main__":
    main()
