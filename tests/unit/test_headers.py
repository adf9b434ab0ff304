"""What edgecache carries upstream on a caller's behalf (headers.on_behalf_of)."""

from __future__ import annotations

from multidict import CIMultiDict

from edgecache.headers import AUTH_TOKEN, REQUEST_ID, as_edgecache, on_behalf_of


def test_the_names_edgecache_reads_are_found_however_the_caller_spelt_them() -> None:
    """An HTTP/2 proxy (haproxy, envoy) sends header names in lower case; the token must
    still be the caller's token, not an anonymous request."""
    sent = CIMultiDict({"x-auth-token": "t", "x-openstack-request-id": "req-1", "x-other": "o"})
    carried = on_behalf_of(sent)
    assert carried[AUTH_TOKEN] == "t"
    assert carried[REQUEST_ID] == "req-1"
    assert carried["x-other"] == "o"


def test_request_specific_and_hop_by_hop_headers_stay_behind() -> None:
    sent = CIMultiDict(
        [
            ("X-Auth-Token", "t"),
            ("Range", "bytes=0-9"),
            ("If-None-Match", '"x"'),
            ("Accept-Encoding", "gzip"),
            ("Connection", "keep-alive, X-Hop"),
            ("X-Hop", "h"),
            ("Host", "edge:9292"),
            ("Content-Length", "0"),
            ("Accept", "*/*"),
            ("User-Agent", "nova"),
        ]
    )
    assert on_behalf_of(sent) == {"X-Auth-Token": "t", "Accept": "*/*", "User-Agent": "nova"}


def test_a_header_sent_twice_is_carried_with_both_values() -> None:
    sent = CIMultiDict([("X-Extra", "a"), ("x-extra", "b"), ("Accept", "text/plain")])
    assert on_behalf_of(sent) == {"X-Extra": "a, b", "Accept": "text/plain"}


def test_a_prefetch_says_it_is_edgecache() -> None:
    own = as_edgecache({"X-Auth-Token": "t", "user-agent": "python-glanceclient"})
    assert own == {"X-Auth-Token": "t", "User-Agent": own["User-Agent"]}
    assert own["User-Agent"].startswith("edgecache/")
