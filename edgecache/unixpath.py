"""Unix socket paths that fit in `sockaddr_un` (108 bytes), however deep the directory.

A cache directory can be deep enough that `<cache_dir>/admin.sock` exceeds the limit, and
bind()/connect() then fail. On Linux, `/proc/self/fd/<fd of the directory>/<name>` names the
same place in a few bytes, for as long as the directory stays open.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) less the terminating NUL


@contextmanager
def usable_socket_path(path: Path) -> Iterator[str]:
    """A path for bind()/connect() that names `path`; valid inside the `with` block."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield str(path)
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{directory}/{path.name}"
    finally:
        os.close(directory)
