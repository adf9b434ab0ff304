"""A minimal JSON-over-HTTP client on ``http.client`` (the stdlib only).

``http.client`` rather than ``urllib``: it never consults ``http_proxy`` (the stack lives on
loopback), does not raise on 4xx/5xx, and streams a file body without reading it whole.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .errors import StackError

_BLOCK = 1 << 20


@dataclass(frozen=True)
class Response:
    """A fully read HTTP response."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HTTPStatusError(StackError):
    """An answer whose status the caller did not expect."""

    def __init__(self, method: str, url: str, response: Response) -> None:
        excerpt = response.body[:500].decode(errors="replace")
        super().__init__(f"{method} {url} -> {response.status}: {excerpt}")
        self.response = response


def request(
    method: str,
    url: str,
    *,
    token: str | None = None,
    json_body: Any = None,
    body: bytes | BinaryIO | None = None,
    headers: Mapping[str, str | None] | None = None,
    expect: Collection[int] | None = None,
    timeout: float = 60.0,
) -> Response:
    """Send one request and read the whole answer.

    ``json_body`` is serialised as JSON; ``body`` is sent as is (a file object needs a
    ``Content-Length`` in ``headers``); a header given as None is not sent (``Accept``). With
    ``expect``, any other status raises :class:`HTTPStatusError`. Connection errors propagate
    as ``OSError``.
    """
    parts = urlsplit(url)
    given = {"Accept": "application/json", **(headers or {})}
    all_headers = {name: value for name, value in given.items() if value is not None}
    if token is not None:
        all_headers["X-Auth-Token"] = token
    if json_body is not None:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    conn = http.client.HTTPConnection(parts.netloc, timeout=timeout, blocksize=_BLOCK)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        raw = conn.getresponse()
        response = Response(raw.status, raw.headers, raw.read())
    finally:
        conn.close()
    if expect is not None and response.status not in expect:
        raise HTTPStatusError(method, url, response)
    return response
