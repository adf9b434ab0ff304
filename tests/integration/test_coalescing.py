"""Eight callers ask for one cold image at once: Glance serves its data exactly once."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tests.integration.conftest import MiB, World, downloads_settle, http
from tests.stack import get_token, rest
from tests.stack.edgecache_daemon import EdgecacheDaemon

CALLERS = 8


def test_concurrent_cold_downloads_make_one_glance_get(
    world: World, edgecache: EdgecacheDaemon
) -> None:
    stack = world.stack
    image = world.new_image("private", size=32 * MiB)
    token = get_token(world.a).value
    url = f"{edgecache.url}/v2/images/{image.id}/file"
    # The caller's token is validated once (Keystone, by edgecache and by Glance) before the
    # race, so that the eight requests reach the fill together.
    http("GET", f"{edgecache.url}/v2/images/{image.id}", token, expect={200})
    start = threading.Barrier(CALLERS)

    def download(_: int) -> rest.Response:
        start.wait()
        return http("GET", url, token, timeout=120)

    with ThreadPoolExecutor(CALLERS) as pool:
        answers = list(pool.map(download, range(CALLERS)))

    for number, answer in enumerate(answers):
        assert answer.status == 200, number
        assert answer.body == image.data, number
        assert answer.headers["Content-MD5"] == image.record["checksum"]
    sources = Counter(answer.headers["X-Edgecache-Source"] for answer in answers)
    print(f"answered from: {dict(sources)}")
    assert set(sources) <= {"fill", "cache"}, sources
    assert sources["fill"] >= 2, f"the callers did not overlap the fill: {sources}"
    assert downloads_settle(stack, image.id, 1) == 1
