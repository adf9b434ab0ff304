"""[keystone]: the service credentials edgecache may act with, and TLS to Keystone."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from edgecache.config.declaration import Section
from edgecache.config.kinds import Boolean, Text, Url

KEYSTONE = Section(
    "keystone",
    intro="Optional service credentials (a service user with the admin or service role). With "
    "them, edgecache validates callers' tokens with Keystone to learn their project and expiry "
    "(no remembered decision outlives its token), and re-checks remembered image records when "
    "the uplink comes back (images deleted or hidden while offline stop being served). Without "
    "this section, Glance's own answers are all edgecache goes by.",
)


@dataclass(frozen=True)
class ServiceCredentials:
    """A Keystone service user edgecache may act as."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


@dataclass(frozen=True, kw_only=True)
class KeystoneSettings:
    keystone_url: str | None = KEYSTONE.setting(
        Url(), None, key="auth_url", example="http://keystone.region.example:5000/v3"
    )
    """The region's Keystone (v3), where edgecache logs in with these credentials."""

    keystone_username: str | None = KEYSTONE.setting(
        Text(), None, key="username", example="edgecache"
    )
    """The service user; required with auth_url."""

    keystone_password: str | None = KEYSTONE.setting(
        Text(), None, key="password", example="change-me"
    )
    """Its password; required with auth_url (keep this file readable by edgecache only)."""

    keystone_project: str = KEYSTONE.setting(Text(), "service", key="project_name")
    """The project the service user is scoped to."""

    keystone_user_domain: str = KEYSTONE.setting(Text(), "Default", key="user_domain_name")
    """The service user's domain."""

    keystone_project_domain: str = KEYSTONE.setting(Text(), "Default", key="project_domain_name")
    """The project's domain."""

    keystone_validation_url: str | None = KEYSTONE.setting(
        Url(), None, key="validation_url", example="http://keystone.edge-site.example:5000/v3"
    )
    """Where callers' tokens are validated, if not at auth_url: a Keystone at the edge site (a
    replica or a federated one) that stays reachable when the WAN is down, so renewed tokens keep
    booting instances from the cache. The same service credentials must work there. Default:
    auth_url."""

    keystone_ca_file: Path | None = KEYSTONE.pem_file("CA", key="ca_file")
    """TLS to Keystone (auth_url and validation_url), set apart from [upstream]'s (Keystone may
    have another CA or want another client certificate); each of these four has the meaning of
    its namesake there. The CA that issued Keystone's certificate."""

    keystone_client_cert: Path | None = KEYSTONE.pem_file("certificate", key="client_cert")
    """A client certificate (PEM, with its chain), for a Keystone that asks for one."""

    keystone_client_key: Path | None = KEYSTONE.private_key(of="client_cert", key="client_key")
    """Its private key (PEM), unless client_cert's file holds it too."""

    keystone_verify: bool = KEYSTONE.setting(Boolean(), True, key="verify")
    """Verify Keystone's certificate and that it names the host (false: a lab only)."""

    @property
    def service_credentials(self) -> ServiceCredentials | None:
        if not (self.keystone_url and self.keystone_username and self.keystone_password):
            return None
        return ServiceCredentials(
            auth_url=self.keystone_url,
            username=self.keystone_username,
            password=self.keystone_password,
            project_name=self.keystone_project,
            user_domain_name=self.keystone_user_domain,
            project_domain_name=self.keystone_project_domain,
        )

    @property
    def validation_credentials(self) -> ServiceCredentials | None:
        """The service credentials at the Keystone that validates callers' tokens: an
        edge-site Keystone if one is set (it stays reachable when the WAN is down), else the
        region's."""
        credentials = self.service_credentials
        if credentials is None or not self.keystone_validation_url:
            return credentials
        return replace(credentials, auth_url=self.keystone_validation_url)
