"""Which headers cross the proxy, in each direction."""

from __future__ import annotations

from collections.abc import Mapping

from multidict import CIMultiDict, CIMultiDictProxy

from edgecache import __version__

# RFC 9110 7.6.1 connection-specific headers, plus those aiohttp computes itself.
HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Host",
        "Content-Length",
    )
)
REQUEST_ID = "X-Openstack-Request-Id"
# The User-Agent of requests edgecache makes for itself (probes, revalidation, prefetch); on
# behalf of a caller it sends the caller's own.
OWN_USER_AGENT = f"edgecache/{__version__}"
AUTH_TOKEN = "X-Auth-Token"
USER_AGENT = "User-Agent"
# Headers that belong to one particular request rather than to the caller: not carried by the
# requests edgecache makes on the caller's behalf (the record GET that authorizes a download, a
# fill, a remembered document). Accept-Encoding too: edgecache reads, verifies and keeps those
# answers and gives them to other callers, so it asks for them as they are (no coding).
_REQUEST_SPECIFIC = frozenset(
    h.lower()
    for h in (
        "Range",
        "If-Range",
        "Content-Range",
        "If-Match",
        "If-None-Match",
        "If-Modified-Since",
        "If-Unmodified-Since",
        "Expect",
        "Accept-Encoding",
    )
)


def forwardable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    """Copy of `headers` without hop-by-hop headers, for either direction of a pass-through."""
    connection_listed = {
        name.strip().lower()
        for value in _getall(headers, "Connection")
        for name in value.split(",")
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lowered = name.lower()
        if lowered not in HOP_BY_HOP and lowered not in connection_listed:
            out.add(name, value)
    return out


def on_behalf_of(headers: Mapping[str, str]) -> dict[str, str]:
    """What requests on the caller's behalf carry: everything the caller sent (credentials,
    request id, Accept, User-Agent...) but hop-by-hop and request-specific headers.

    The names edgecache reads from it are spelt as edgecache spells them, however the caller
    wrote them (HTTP/2 proxies send them in lower case); a header sent twice is one, its
    values joined by commas as RFC 9110 5.3 allows (and as Glance's WSGI server does).
    """
    out: dict[str, str] = {}
    spelt: dict[str, str] = {}
    for name, value in forwardable(headers).items():
        lowered = name.lower()
        if lowered in _REQUEST_SPECIFIC:
            continue
        name = spelt.setdefault(lowered, _READ_BY_EDGECACHE.get(lowered, name))
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


_READ_BY_EDGECACHE = {name.lower(): name for name in (AUTH_TOKEN, REQUEST_ID, USER_AGENT)}


def as_edgecache(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers with edgecache's User-Agent, for a request edgecache makes of its
    own accord with the caller's credentials (a prefetch)."""
    own = {name: value for name, value in headers.items() if name.lower() != USER_AGENT.lower()}
    own[USER_AGENT] = OWN_USER_AGENT
    return own


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return list(headers.getall(name, []))
    return [v for k, v in headers.items() if k.lower() == name.lower()]
