"""The real thing: Keystone 30 + Glance 33 from PyPI, edgecache as a subprocess in front.

One stack and one edgecache per session. Projects: A owns images of every visibility, B is a
member of A's shared image (accepted), C is an outsider. Tests that count Glance's data GETs
make fresh images (:meth:`World.new_image`) so that what other tests cached never matters.

These tests never skip: a stack that cannot be built or started is a failure, with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.stack import Credentials, OpenStackStack, StackError, Token, Visibility, get_token, rest
from tests.stack.edgecache_daemon import EdgecacheDaemon
from tests.stack.install import ensure_stack_venv

MiB = 1 << 20
IMAGE_SIZE = 3 * MiB
VISIBILITIES: tuple[Visibility, ...] = ("public", "private", "shared", "community")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


# -- the world ------------------------------------------------------------------------------


@dataclass
class Image:
    record: dict[str, Any]  # Glance's own answer right after the upload
    data: bytes

    @property
    def id(self) -> str:
        return str(self.record["id"])


@dataclass
class World:
    """The stack, its projects and their images."""

    stack: OpenStackStack
    a: Credentials  # owner of every image except the public one
    b: Credentials  # member of A's shared images (accepted)
    c: Credentials  # outsider
    reader: Credentials  # in A's project with only the reader role: sees, may not download
    images: dict[Visibility, Image] = field(default_factory=dict)
    _counter: int = 0

    def new_image(self, visibility: Visibility = "private", size: int = IMAGE_SIZE) -> Image:
        """A fresh image of random raw bytes: public ones by admin (only admins may publicize),
        the others by A; shared ones are shared with B and accepted by B."""
        self._counter += 1
        data = os.urandom(size)
        owner = self.stack.admin if visibility == "public" else self.a
        token = get_token(owner)
        name = f"{visibility}-{self._counter}"
        record = self.stack.create_image(token, name, data, visibility=visibility)
        if visibility == "shared":
            self.stack.share_image(record["id"], token, self.b)
        return Image(record, data)


@pytest.fixture(scope="session")
def integ_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """/tmp/integ-*: removed at the end, or if a test failed kept (named in the output) with
    its configs, logs and databases but without image data."""
    path = Path(tempfile.mkdtemp(prefix="integ-", dir="/tmp"))
    failed_before = request.session.testsfailed
    yield path
    if request.session.testsfailed == failed_before:
        shutil.rmtree(path, ignore_errors=True)
        return
    for file in path.rglob("*"):  # keep configs, logs and databases; drop image bytes
        if file.is_file() and file.suffix != ".log" and file.stat().st_size > MiB:
            file.unlink()
    print(f"\nintegration logs kept in {path}")


@pytest.fixture
def tmp_path(integ_dir: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Scratch space for one test inside this run's /tmp/integ-* (rather than pytest's basetemp,
    which concurrent pytest runs on the machine share and prune); removed after the test."""
    scratch = integ_dir / "scratch"
    scratch.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{request.node.name[:60]}-", dir=scratch))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(integ_dir: Path) -> Iterator[OpenStackStack]:
    try:
        venv = ensure_stack_venv()
        stack = OpenStackStack(integ_dir / "stack", venv=venv).start()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the Keystone + Glance stack could not start: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def world(stack: OpenStackStack) -> World:
    a = stack.create_project_user("project-a")
    world = World(
        stack,
        a=a,
        b=stack.create_project_user("project-b"),
        c=stack.create_project_user("project-c"),
        reader=stack.create_user_in(a, "reader-a", ["reader"]),
    )
    for visibility in VISIBILITIES:
        world.images[visibility] = world.new_image(visibility)
    return world


@pytest.fixture(scope="session")
def edgecache(stack: OpenStackStack, integ_dir: Path) -> Iterator[EdgecacheDaemon]:
    yield from running(
        EdgecacheDaemon(integ_dir / "edgecache", stack.glance_url, keystone=stack.glance_service)
    )


def running(daemon: EdgecacheDaemon) -> Iterator[EdgecacheDaemon]:
    """For fixtures: the daemon started (a start that fails fails the test, with the reason),
    and stopped afterwards."""
    try:
        daemon.start()
    except StackError as exc:
        pytest.fail(f"edgecache could not start: {exc}", pytrace=False)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report ends with edgecache's last log lines."""
    report = yield
    daemon = getattr(item, "funcargs", {}).get("edgecache")
    if report.failed and isinstance(daemon, EdgecacheDaemon):
        report.sections.append((f"edgecache log ({daemon.log_path})", daemon.log_tail(60)))
    return report


# -- clients --------------------------------------------------------------------------------


def glance_as(
    stack: OpenStackStack, creds: Credentials, *args: str, image_url: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real ``glance`` CLI with password authentication (a fresh token on every run)."""
    return stack.glance_cli(creds, *args, image_url=image_url, check=check, timeout=120)


def glance_with_token(
    stack: OpenStackStack, token: Token | str, *args: str, image_url: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real ``glance`` CLI with one given token (``OS_AUTH_TOKEN`` + ``OS_IMAGE_URL``):
    no Keystone round trip, and the same caller every time."""
    value = token.value if isinstance(token, Token) else token
    env = stack.client_env() | {"OS_AUTH_TOKEN": value, "OS_IMAGE_URL": image_url}
    return subprocess.run(
        [str(stack.bin_dir / "glance"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def show(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``glance image-show`` (table output) as {property: value}, wrapped values joined."""
    fields: dict[str, str] = {}
    key = ""
    for line in result.stdout.splitlines():
        if not line.startswith("|"):
            continue
        name, value = (part.strip() for part in line.strip("|").split("|", 1))
        if name == "Property":
            continue
        if name:
            key = name
            fields[key] = value
        else:
            fields[key] += value
    return fields


def listed_ids(result: subprocess.CompletedProcess[str]) -> set[str]:
    """The ids in ``glance image-list`` output."""
    ids = set()
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells[0]) == 36 and cells[0] != "ID":
            ids.add(cells[0])
    return ids


SDK_DOWNLOAD = """
import json, sys
import openstack

url, image_id, path = sys.argv[1:4]
conn = openstack.connect(image_endpoint_override=url)
image = conn.image.get_image(image_id)
conn.image.download_image(image, output=path)
print(json.dumps({"checksum": image.checksum, "hash": image.hash_value, "size": image.size}))
"""


def sdk_download(
    stack: OpenStackStack, creds: Credentials, image_id: str, path: Path, *, image_url: str
) -> dict[str, Any]:
    """openstacksdk (from the stack venv, configured from ``OS_*``) pointed at ``image_url``
    with ``image_endpoint_override``: get the image, download it to ``path``."""
    result = subprocess.run(
        [str(stack.bin_dir / "python"), "-c", SDK_DOWNLOAD, image_url, image_id, str(path)],
        env=stack.client_env(creds),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def http(method: str, url: str, token: Token | str | None = None, **kwargs: Any) -> rest.Response:
    """One plain HTTP request (``http.client``; no proxy), the whole answer read."""
    value = token.value if isinstance(token, Token) else token
    return rest.request(method, url, token=value, **kwargs)


def downloads_settle(stack: OpenStackStack, image_id: str, expected: int) -> int:
    """Glance's count of data GETs for ``image_id``, once any late access-log line is in.

    gunicorn writes a line after the last byte is sent; waiting for one more than expected
    (briefly) catches a request that finished just before we looked.
    """
    stack.count_image_downloads(image_id, at_least=expected, timeout=10)
    time.sleep(0.2)
    return stack.count_image_downloads(image_id)
