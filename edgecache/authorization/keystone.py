"""Optional service credentials: validate callers' tokens and revalidate records as a service.

With them edgecache learns who a token stands for (user, project, roles) and when it expires,
so Glance's decisions are remembered per identity (a renewed token of the same user keeps its
access while the uplink is down) and never outlive the token presenting them; and it can
re-check remembered image records when the uplink comes back. Without them, Glance's
per-request answers are all it knows.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime

import aiohttp

from edgecache.config import ServiceCredentials, Settings
from edgecache.metrics import Metrics
from edgecache.tls import ClientTls, client_context, warn_if_unverified
from edgecache.upstream.client import TRANSIENT_ERRORS
from edgecache.upstream.failures import FailureDescriber, FailureExplainer

log = logging.getLogger(__name__)

_REFRESH_MARGIN = 300.0  # renew the service token this long before it expires
# After Keystone could not be asked, callers' tokens are not sent to it again for this long: a
# Keystone cut off with the WAN would otherwise cost every new token a connect timeout.
_UNREACHABLE_BACKOFF = 10.0
# What a call to Keystone may fail with (unreachable, refused, an answer that makes no sense).
KEYSTONE_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    aiohttp.ClientResponseError,
    PermissionError,
    ValueError,
    KeyError,
)


@dataclass(frozen=True)
class TokenRejected:
    """Keystone's word that a token is not valid (unknown, expired or revoked)."""


TOKEN_REJECTED = TokenRejected()


@dataclass(frozen=True)
class TokenInfo:
    """What Keystone says a token stands for: the parts Glance's policy can look at."""

    user_id: str | None
    project_id: str | None
    scope: str  # "project:<id>", "domain:<id>", "system" or "unscoped"
    expires_at: float
    roles: frozenset[str]


class Keystone:
    def __init__(
        self,
        credentials: ServiceCredentials,
        session: aiohttp.ClientSession,
        failures: FailureExplainer | None = None,
    ) -> None:
        """`failures` puts Keystone's connection and TLS failures into words (and metrics)."""
        self._credentials = credentials
        self._session = session
        self._failures = failures
        self._token: str | None = None
        self._token_expires = 0.0
        self._unreachable_until = 0.0  # monotonic

    def acting_as(self, credentials: ServiceCredentials) -> Keystone:
        """A client for other credentials (an edge-site Keystone's) on the same session and
        [keystone] TLS settings."""
        return Keystone(credentials, self._session, self._failures)

    @property
    def _tokens_url(self) -> str:
        return self._credentials.auth_url.rstrip("/") + "/auth/tokens"

    async def token(self) -> str:
        if self._token is None or time.time() > self._token_expires - _REFRESH_MARGIN:
            self._token, info = await self._authenticate()
            self._token_expires = info.expires_at
        return self._token

    async def validate(self, token: str) -> TokenInfo | TokenRejected | None:
        """What Keystone says of a caller's token: who it stands for, TOKEN_REJECTED if Keystone
        says it is not valid (404: unknown, expired or revoked), None if Keystone cannot say
        now (unreachable, or it refused edgecache's own service token)."""
        if time.monotonic() < self._unreachable_until:
            return None
        try:
            headers = {"X-Auth-Token": await self.token(), "X-Subject-Token": token}
            async with self._session.get(self._tokens_url, headers=headers) as response:
                if response.status == 404:
                    return TOKEN_REJECTED
                if response.status != 200:
                    return None
                return _token_info(await response.json())
        except KEYSTONE_ERRORS as exc:
            log.warning(
                "could not validate callers' tokens with Keystone at %s (%s); for the next "
                "%.0f s new tokens are judged by Glance's answers alone, and refused while the "
                "uplink is down. Check that Keystone is reachable from this site and that the "
                "[keystone] service credentials are right.",
                self._credentials.auth_url,
                await self._why(exc),
                _UNREACHABLE_BACKOFF,
            )
            self._unreachable_until = time.monotonic() + _UNREACHABLE_BACKOFF
            return None

    async def _why(self, exc: BaseException) -> str:
        if self._failures is not None and isinstance(exc, TRANSIENT_ERRORS):
            return (await self._failures.explain(self._credentials.auth_url, exc)).sentence
        return describe(exc)

    async def _authenticate(self) -> tuple[str, TokenInfo]:
        c = self._credentials
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {
                            "name": c.username,
                            "domain": {"name": c.user_domain_name},
                            "password": c.password,
                        }
                    },
                },
                "scope": {
                    "project": {"name": c.project_name, "domain": {"name": c.project_domain_name}}
                },
            }
        }
        async with self._session.post(self._tokens_url, json=body) as response:
            if response.status != 201:
                raise PermissionError(
                    f"Keystone refused the service credentials ({response.status})"
                )
            return response.headers["X-Subject-Token"], _token_info(await response.json())


def service_keystone(
    credentials: ServiceCredentials, settings: Settings, metrics: Metrics
) -> tuple[Keystone, aiohttp.ClientSession]:
    """The daemon's Keystone client, with a session of its own: Keystone has its own CA, client
    certificate and verify setting ([keystone]). The caller closes the session."""
    tls = ClientTls.keystone(settings)
    warn_if_unverified(tls, (credentials.auth_url,))
    context = client_context(tls)
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
    )
    session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=context))
    failures = FailureExplainer(
        FailureDescriber.of(tls, context, settings.connect_timeout), metrics
    )
    return Keystone(credentials, session, failures), session


def _token_info(body: dict[str, object]) -> TokenInfo:
    token = body["token"]
    assert isinstance(token, dict)
    project = token.get("project")
    project_id = str(project["id"]) if isinstance(project, dict) and "id" in project else None
    user = token.get("user")
    expires = datetime.fromisoformat(str(token["expires_at"]).replace("Z", "+00:00"))
    return TokenInfo(
        user_id=str(user["id"]) if isinstance(user, dict) and "id" in user else None,
        project_id=project_id,
        scope=_scope(token, project_id),
        expires_at=expires.timestamp(),
        roles=frozenset(r["name"] for r in token.get("roles", []) if isinstance(r, dict)),
    )


def _scope(token: dict[str, object], project_id: str | None) -> str:
    if project_id is not None:
        return f"project:{project_id}"
    domain = token.get("domain")
    if isinstance(domain, dict) and "id" in domain:
        return f"domain:{domain['id']}"
    return "system" if token.get("system") else "unscoped"


def describe(exc: BaseException) -> str:
    """A failure in words for a log line: the message, or the kind of error if it has none."""
    return str(exc) or type(exc).__name__
