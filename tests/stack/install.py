"""The stack's own virtualenv: Keystone, Glance and their clients from PyPI.

It is kept apart from the project's venv (OpenStack pins half of PyPI) and cached across
runs under a name derived from the requirement list, so changing the list builds a new one.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import StackError

log = logging.getLogger(__name__)

REQUIREMENTS: tuple[str, ...] = (
    "glance==33.*",
    "keystone==30.*",
    "python-glanceclient",
    "openstacksdk",
    "gunicorn",
)
MARKER = ".edgecache-stack-ready"


def default_cache_root() -> Path:
    """``$EDGECACHE_STACK_CACHE``, else ``edgecache-test-stack`` in the XDG cache home."""
    if explicit := os.environ.get("EDGECACHE_STACK_CACHE"):
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "edgecache-test-stack"


def venv_key(requirements: Sequence[str]) -> str:
    """Short hash naming a venv: the requirements plus the interpreter's minor version."""
    text = "\n".join([f"python{sys.version_info[0]}.{sys.version_info[1]}", *requirements])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ensure_stack_venv(
    cache_root: Path | None = None, requirements: Sequence[str] = REQUIREMENTS
) -> Path:
    """Return a venv with ``requirements`` installed, building it first if needed.

    Safe to call from several processes at once (a file lock serialises the build). A venv
    whose marker file is missing or stale (an interrupted build), or whose interpreter is
    gone, is deleted and rebuilt.
    """
    root = cache_root or default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"venv-{venv_key(requirements)}"
    marker = venv / MARKER
    expected = "\n".join(requirements) + "\n"
    with _file_lock(root / ".lock"):
        # The interpreter link dangles if the Python that built the venv was removed.
        usable = (venv / "bin" / "python").exists()
        if usable and marker.is_file() and marker.read_text() == expected:
            return venv
        _build(venv, requirements)
        marker.write_text(expected)
    return venv


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(venv: Path, requirements: Sequence[str]) -> None:
    shutil.rmtree(venv, ignore_errors=True)
    log_path = venv.with_name(venv.name + ".install.log")
    log.info("building the test stack venv %s (pip output: %s)", venv, log_path)
    started = time.monotonic()
    with log_path.open("w") as out:
        _run([sys.executable, "-m", "venv", str(venv)], out, log_path)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, *requirements], out, log_path)
    log.info("test stack venv installed in %.1f s", time.monotonic() - started)


def _run(argv: list[str], out: IO[str], log_path: Path) -> None:
    result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        hint = ""
        if "ensurepip" in "\n".join(tail):
            hint = " (on Debian/Ubuntu: apt-get install python3-venv)"
        raise StackError(
            f"{' '.join(argv[:4])}... failed with exit code {result.returncode}{hint}:\n"
            + "\n".join(tail)
        )
