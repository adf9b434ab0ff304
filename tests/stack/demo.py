"""``python -m tests.stack.demo [--keep] [--size MIB]`` (what ``scripts/demo.sh`` runs).

A real Keystone + Glance on loopback, a demo image uploaded to Glance, edgecache in front of
it, and the image downloaded twice through edgecache with the real ``glance`` CLI: the first
download is fetched from Glance (and verified and cached on the way), the second comes from
edgecache's disk. Then edgecache's own counters, and how to use it with a real Glance.
Everything started here is stopped on exit, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from .edgecache_daemon import EdgecacheDaemon
from .errors import StackError
from .install import default_cache_root, ensure_stack_venv
from .openstack import Credentials, OpenStackStack, get_token

MiB = 1 << 20
SHOWN_METRICS = (
    "edgecache_data_requests_total",
    "edgecache_served_bytes_total",
    "edgecache_fetched_bytes_total",
)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Stop(Exception):
    """Raised by the signal handler, so that every ``with`` block cleans up on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for sig in _STOP_SIGNALS:
        signal.signal(sig, _stop_on_signal)
    base = Path(tempfile.mkdtemp(prefix="edgecache-demo-"))
    try:
        _demo(base, args.size * MiB, args.keep)
    except _Stop as stop:
        print("\nstopped.")
        shutil.rmtree(base, ignore_errors=True)
        return 0 if args.keep else 128 + stop.signum
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        print(f"\ndemo failed: {exc}\n(configs and logs are kept in {base})", file=sys.stderr)
        return 1
    shutil.rmtree(base, ignore_errors=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/demo.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--keep", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument(
        "--size", type=int, default=128, metavar="MIB", help="demo image size (default 128)"
    )
    return parser


def _demo(base: Path, size: int, keep: bool) -> None:
    step("Preparing Keystone + Glance (from PyPI)")
    started = time.monotonic()
    say(f"stack venv under {default_cache_root()} (built once, ~40 s; reused afterwards)")
    venv = ensure_stack_venv()
    say(f"ready in {time.monotonic() - started:.1f} s")

    step("Starting Keystone and Glance on loopback")
    started = time.monotonic()
    with OpenStackStack(base / "stack", venv=venv) as stack:
        say(f"Keystone {stack.auth_url}")
        say(f"Glance   {stack.glance_url}   (up in {time.monotonic() - started:.1f} s)")
        user = stack.create_project_user("demo")

        step(f"Uploading a {size // MiB} MiB demo image to Glance as user 'demo'")
        source = base / "demo-image.raw"
        digest = _write_random(source, size)
        image = stack.create_image(get_token(user), "edgecache-demo", source)
        source.unlink()
        say(f"image {image['id']}: {image['size']} bytes, status {image['status']}")

        step("Starting edgecache in front of Glance")
        daemon = EdgecacheDaemon(base / "edgecache", stack.glance_url)
        with daemon:
            say(f"edgecache {daemon.url}   (upstream {stack.glance_url})")
            say(f"config {daemon.config_path}, log {daemon.log_path}")
            _download_twice(stack, daemon, user, image["id"], digest, base)
            _show_metrics(daemon)
            _show_usage(daemon)
            if keep:
                _keep_running(stack, daemon, user)
        step("Stopping edgecache, Glance and Keystone")
    say("done.")


def _download_twice(
    stack: OpenStackStack,
    daemon: EdgecacheDaemon,
    user: Credentials,
    image_id: str,
    digest: str,
    base: Path,
) -> None:
    step("Downloading it twice through edgecache with the glance CLI")
    say(f"$ glance --os-image-url {daemon.url} image-download --file OUT {image_id}")
    for attempt, label in ((1, "miss: fetched from Glance, verified, cached"), (2, "hit")):
        out = base / f"download-{attempt}.raw"
        started = time.monotonic()
        result = stack.glance_cli(
            user, "image-download", "--file", str(out), image_id,
            image_url=daemon.url, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise StackError(f"glance image-download failed: {result.stderr.strip()}")
        same = _sha256(out) == digest
        out.unlink()
        say(
            f"download {attempt}: {elapsed:5.2f} s  ({label}); bytes identical to the upload: "
            f"{'yes' if same else 'NO'}"
        )
        if not same:
            raise StackError("the downloaded bytes differ from the uploaded image")
    served = stack.count_image_downloads(image_id, at_least=1)
    say(f"Glance's access log: the image's data was sent {served} time(s) for 2 downloads")
    say("(each time includes the CLI's own start-up, Keystone login and md5 check; over")
    say(" loopback Glance is as fast as a disk, over a WAN the miss is bounded by the link)")


def _show_metrics(daemon: EdgecacheDaemon) -> None:
    step(f"edgecache's counters ({daemon.url}/metrics)")
    for name, value in daemon.metrics().items():
        if name.startswith(SHOWN_METRICS):
            say(f"{name} {value:.0f}")


def _show_usage(daemon: EdgecacheDaemon) -> None:
    step("Using edgecache with a real regional Glance")
    print(
        """\
  On a host in the edge zone:

    pip install .
    edgecache serve --upstream http://glance.region.example:9292 \\
        --listen 0.0.0.0:9292 --cache-dir /var/cache/edgecache --max-size 200GiB

  (or a TOML file: config/edgecache.toml documents every key, including the optional
  [keystone] service credentials.) Then point the consumers at it:

    nova-compute, nova.conf:   [glance]
                               endpoint_override = http://EDGE-HOST:9292
    glance CLI:                glance --os-image-url http://EDGE-HOST:9292 image-list
    openstacksdk, clouds.yaml: image_endpoint_override: http://EDGE-HOST:9292
""",
        flush=True,
    )


def _keep_running(stack: OpenStackStack, daemon: EdgecacheDaemon, user: Credentials) -> None:
    step("Still running (--keep): try it, then press Ctrl-C to stop everything")
    env = user.as_env()
    print(f"  export PATH={stack.bin_dir}:$PATH")
    for key in ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME"):
        print(f"  export {key}={env[key]}")
    print("  export OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default")
    print(f"  glance --os-image-url {daemon.url} image-list")
    print(f"  curl -s {daemon.url}/metrics | grep ^edgecache_data", flush=True)
    while True:
        signal.pause()


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(remaining, 8 * MiB))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * MiB):
            digest.update(block)
    return digest.hexdigest()


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def say(text: str) -> None:
    print(f"    {text}", flush=True)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signum)


if __name__ == "__main__":
    sys.exit(main())
