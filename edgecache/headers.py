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
# What an authorization check or a fill carries upstream on behalf of the caller.
_IDENTITY_HEADERS = (
    AUTH_TOKEN,
    REQUEST_ID,
    "Accept",  # Glance words its errors in the format the caller accepts
    "X-Service-Token",
    "X-Roles",
    "X-Project-Id",
    "X-Identity-Status",
    "X-User-Id",
    "X-Tenant-Id",
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


def identity(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's credentials, request id and Accept, for requests on its behalf."""
    return {name: headers[name] for name in _IDENTITY_HEADERS if name in headers}


def _getall(headers: Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, CIMultiDict | CIMultiDictProxy):
        return list(headers.getall(name, []))
    return [v for k, v in headers.items() if k.lower() == name.lower()]
