"""Settings: defaults, overlaid by a TOML file, overlaid by command-line flags.

Every problem is reported as one `ConfigError` naming the key, so the command line can print a
single clear line and exit 2 before anything is started.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgecache.logs import LOG_FORMATS

DEFAULT_CONFIG_PATH = Path("/etc/edgecache/edgecache.toml")
CONFIG_ENV = "EDGECACHE_CONFIG"

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def parse_size(text: str | int, key: str = "size") -> int:
    """Parse `500MiB`, `20GiB`, `1.5TB` or a plain byte count into bytes."""
    if isinstance(text, bool):
        raise ConfigError(key, f"expected a size such as 20GiB, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(key, "must not be negative")
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(key, f"expected a size such as 500MiB, 20GiB or 1.5TB, got {text!r}")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgecache"


@dataclass(frozen=True)
class ServiceCredentials:
    """A Keystone service user edgecache may act as (see [keystone] in the example config)."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"


@dataclass(frozen=True)
class Settings:
    """Everything the daemon is configured with; see config/edgecache.toml for each key."""

    upstream: str = ""
    fallbacks: tuple[str, ...] = ()
    listen_host: str = "127.0.0.1"
    listen_port: int = 9292
    cache_dir: Path = field(default_factory=default_cache_dir)
    max_size: int = 20 * 2**30
    index_max_size: int = 256 * 2**20
    chunk_size: int = 4 * 2**20
    fill_memory: int = 48 * 2**20
    verify_reads: bool = True
    verify_md5: bool = False
    reverify_after: float = 60.0
    quarantine_keep: float = 24 * 3600.0
    prefetch_parallel: int = 2
    stall_timeout: float = 60.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    failures_to_offline: int = 2
    data_connections: int = 16
    metadata_connections: int = 32
    pool_wait: float = 10.0
    probe_interval: float = 2.0
    decision_ttl: float = 12 * 3600.0
    token_lifetime: float = 3600.0  # Keystone's default [token] expiration
    record_max_age: float = 900.0
    reuse_decisions_for: float = 0.0
    offline_download_roles: tuple[str, ...] = ("member", "admin")
    keystone_url: str | None = None
    keystone_validation_url: str | None = None
    keystone_username: str | None = None
    keystone_password: str | None = None
    keystone_project: str | None = None
    keystone_user_domain: str = "Default"
    keystone_project_domain: str = "Default"
    upstream_ca_file: Path | None = None
    upstream_client_cert: Path | None = None
    upstream_client_key: Path | None = None
    upstream_verify: bool = True
    keystone_ca_file: Path | None = None
    keystone_client_cert: Path | None = None
    keystone_client_key: Path | None = None
    keystone_verify: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    log_level: str = "info"
    log_format: str = "text"
    admin_socket_path: Path | None = None
    shutdown_timeout: float = 30.0
    client_idle_timeout: float = 60.0
    zone_peers: tuple[str, ...] = ()
    zone_self: str | None = None
    zone_secret: str | None = None
    zone_lookup_timeout: float = 1.0
    zone_listen: tuple[str, int] | None = None  # the sibling endpoint's own (host, port)
    zone_ca_file: Path | None = None
    zone_client_cert: Path | None = None
    zone_client_key: Path | None = None
    zone_tls_cert: Path | None = None
    zone_tls_key: Path | None = None
    # [prefetch] (warm jobs, issue 22; see the block "[prefetch] settings" below): the daily
    # span of local time in which queued prefetches start, as (start, end) minutes after
    # midnight; None: at any time.
    prefetch_window: tuple[int, int] | None = None

    @property
    def siblings(self) -> tuple[str, ...]:
        """The other nodes of this zone (every configured peer but this node itself)."""
        return tuple(peer for peer in self.zone_peers if peer != self.zone_self)

    @property
    def admin_socket(self) -> Path:
        return self.admin_socket_path or Path(self.cache_dir) / "admin.sock"

    @property
    def upstream_url(self) -> str:
        return self.upstream.rstrip("/")

    @property
    def upstream_urls(self) -> tuple[str, ...]:
        """The primary upstream first, then the fallbacks in order of preference."""
        return (self.upstream_url, *(url.rstrip("/") for url in self.fallbacks))

    @property
    def service_credentials(self) -> ServiceCredentials | None:
        if not (self.keystone_url and self.keystone_username and self.keystone_password):
            return None
        return ServiceCredentials(
            auth_url=self.keystone_url,
            username=self.keystone_username,
            password=self.keystone_password,
            project_name=self.keystone_project or "service",
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


# --- [prefetch] settings (warm jobs, issue 22) ------------------------------------------------
# Kept together for the port to declared settings: the Settings field `prefetch_window`, this
# section's keys, and how its values are read (_coerce hands them to _coerce_prefetch).
PREFETCH_KEYS = {"window": "prefetch_window"}
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def _coerce_prefetch(attr: str, key: str, value: Any) -> dict[str, Any]:
    """`window = "22:00-06:00"`: local time, crossing midnight when the end is before the
    start; "" leaves it unset (jobs start at any time)."""
    if value == "":
        return {}
    match = _WINDOW.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(
            key, f'expected a span of local time such as "22:00-06:00", got {value!r}'
        )
    hours_start, minutes_start, hours_end, minutes_end = (int(part) for part in match.groups())
    start, end = hours_start * 60 + minutes_start, hours_end * 60 + minutes_end
    if hours_start > 23 or minutes_start > 59 or minutes_end > 59 or end > 24 * 60:
        raise ConfigError(key, f"{value!r} is not a time of day (00:00 to 24:00)")
    if start == end % (24 * 60):
        raise ConfigError(key, f"{value!r} starts where it ends; leave it unset for any time")
    return {attr: (start, end)}


# --- end of [prefetch] settings ----------------------------------------------------------------


# TOML layout: section -> {toml key -> Settings attribute}
TOML_KEYS: dict[str, dict[str, str]] = {
    "upstream": {
        "url": "upstream",
        "fallbacks": "fallbacks",
        "connect_timeout": "connect_timeout",
        "read_timeout": "read_timeout",
        "stall_timeout": "stall_timeout",
        "failures_to_offline": "failures_to_offline",
        "probe_interval": "probe_interval",
        "ca_file": "upstream_ca_file",
        "client_cert": "upstream_client_cert",
        "client_key": "upstream_client_key",
        "verify": "upstream_verify",
        "data_connections": "data_connections",
        "metadata_connections": "metadata_connections",
        "pool_wait": "pool_wait",
    },
    "server": {
        "listen": "listen",
        "log_level": "log_level",
        "log_format": "log_format",
        "shutdown_timeout": "shutdown_timeout",
        "client_idle_timeout": "client_idle_timeout",
        "admin_socket": "admin_socket_path",
        "tls_cert": "tls_cert",
        "tls_key": "tls_key",
        "tls_client_ca": "tls_client_ca",
    },
    "offline": {
        "decision_ttl": "decision_ttl",
        "token_lifetime": "token_lifetime",
        "record_max_age": "record_max_age",
    },
    "auth": {
        "reuse_decisions_for": "reuse_decisions_for",
        "offline_download_roles": "offline_download_roles",
    },
    "keystone": {
        "auth_url": "keystone_url",
        "validation_url": "keystone_validation_url",
        "username": "keystone_username",
        "password": "keystone_password",
        "project_name": "keystone_project",
        "user_domain_name": "keystone_user_domain",
        "project_domain_name": "keystone_project_domain",
        "ca_file": "keystone_ca_file",
        "client_cert": "keystone_client_cert",
        "client_key": "keystone_client_key",
        "verify": "keystone_verify",
    },
    "cache": {
        "dir": "cache_dir",
        "max_size": "max_size",
        "index_max_size": "index_max_size",
        "chunk_size": "chunk_size",
        "fill_memory": "fill_memory",
        "verify_reads": "verify_reads",
        "verify_md5": "verify_md5",
        "reverify_after": "reverify_after",
        "quarantine_keep": "quarantine_keep",
        "prefetch_parallel": "prefetch_parallel",
    },
    "zone": {
        "peers": "zone_peers",
        "self": "zone_self",
        "secret": "zone_secret",
        "lookup_timeout": "zone_lookup_timeout",
        "listen": "zone_listen",
        "ca_file": "zone_ca_file",
        "client_cert": "zone_client_cert",
        "client_key": "zone_client_key",
        "tls_cert": "zone_tls_cert",
        "tls_key": "zone_tls_key",
    },
    "prefetch": PREFETCH_KEYS,  # the block "[prefetch] settings" below
}
TOML_KEYS_BY_ATTR = {attr: key for table in TOML_KEYS.values() for key, attr in table.items()}
MIN_ZONE_SECRET = 16
_ANY_ADDRESSES = ("0.0.0.0", "::")
_LOG_LEVELS = ("debug", "info", "warning", "error")
# PEM files: Settings attribute -> what the file must hold
_CERTIFICATE_FILES = (
    "upstream_client_cert",
    "keystone_client_cert",
    "tls_cert",
    "zone_client_cert",
    "zone_tls_cert",
)
_KEY_FILES = (
    "upstream_client_key",
    "keystone_client_key",
    "tls_key",
    "zone_client_key",
    "zone_tls_key",
)
_CA_FILES = ("upstream_ca_file", "keystone_ca_file", "tls_client_ca", "zone_ca_file")
_ZONE_TLS = ("zone_ca_file", "zone_client_cert", "zone_client_key", "zone_tls_cert", "zone_tls_key")
_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


def _flatten_toml(document: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, table in document.items():
        if section not in TOML_KEYS:
            raise ConfigError(section, f"unknown section (known: {', '.join(TOML_KEYS)})")
        if not isinstance(table, dict):
            raise ConfigError(section, "must be a table")
        for key, value in table.items():
            if key not in TOML_KEYS[section]:
                raise ConfigError(f"{section}.{key}", "unknown setting")
            flat[TOML_KEYS[section][key]] = (f"{section}.{key}", value)
    return flat


def _parse_listen(text: str, key: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _check_url(text: Any, key: str) -> str:
    parts = urlsplit(str(text))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(key, f"expected an http(s) URL, got {text!r}")
    return str(text)


def _coerce(attr: str, key: str, value: Any) -> dict[str, Any]:
    """Turn one raw value into Settings attributes, or raise ConfigError naming `key`."""
    if attr in PREFETCH_KEYS.values():
        return _coerce_prefetch(attr, key, value)
    if attr == "listen":
        host, port = _parse_listen(value, key)
        return {"listen_host": host, "listen_port": port}
    if attr in ("upstream", "keystone_url", "keystone_validation_url"):
        return {attr: _check_url(value, key)}
    if attr == "fallbacks":
        if isinstance(value, str):
            value = [url for url in value.split(",") if url.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, "expected a list of http(s) URLs")
        return {attr: tuple(_check_url(url.strip(), key) for url in value)}
    if attr == "zone_peers":
        if not isinstance(value, list):
            raise ConfigError(key, 'expected a list of node URLs, such as ["http://node1:9292"]')
        if not value:  # a node on its own
            return {}
        return {attr: tuple(_check_url(url, key).rstrip("/") for url in value)}
    if attr in ("zone_self", "zone_secret", "zone_listen") and value == "":  # as for paths: unset
        return {}
    if attr == "zone_listen":
        return {attr: _parse_listen(value, key)}
    if attr == "zone_self":
        return {attr: _check_url(value, key).rstrip("/")}
    if attr == "zone_secret":
        if not isinstance(value, str) or len(value) < MIN_ZONE_SECRET:
            raise ConfigError(key, f"expected a string of at least {MIN_ZONE_SECRET} characters")
        return {attr: value}
    if attr in _CERTIFICATE_FILES or attr in _KEY_FILES or attr in _CA_FILES:
        if value == "":  # TOML has no null: an empty path leaves the setting unset
            return {}
        return {attr: _pem_path(attr, key, value)}
    if attr in ("upstream_verify", "keystone_verify"):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return {attr: value}
    if attr == "offline_download_roles":
        if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
            raise ConfigError(key, 'expected a list of role names, such as ["member"]')
        return {attr: tuple(value)}
    if attr.startswith("keystone_"):
        if not isinstance(value, str) or not value:
            raise ConfigError(key, "expected a non-empty string")
        return {attr: value}
    if attr in ("cache_dir", "admin_socket_path"):
        return {attr: Path(str(value)).expanduser()}
    if attr in ("max_size", "index_max_size", "chunk_size", "fill_memory"):
        size = parse_size(value, key)
        if attr == "chunk_size" and not 64 * 2**10 <= size <= 256 * 2**20:
            raise ConfigError(key, "must be between 64KiB and 256MiB")
        if attr in ("fill_memory", "index_max_size") and size < 2**20:
            raise ConfigError(key, f"must be at least 1MiB, got {value!r}")
        return {attr: size}
    if attr in ("verify_reads", "verify_md5"):
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return {attr: value}
    if attr in (
        "failures_to_offline",
        "prefetch_parallel",
        "data_connections",
        "metadata_connections",
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(key, f"expected a whole number >= 1, got {value!r}")
        return {attr: value}
    if attr in (
        "connect_timeout",
        "read_timeout",
        "stall_timeout",
        "probe_interval",
        "decision_ttl",
        "token_lifetime",
        "record_max_age",
        "shutdown_timeout",
        "client_idle_timeout",
        "pool_wait",
        "zone_lookup_timeout",
    ):
        return {attr: _seconds(key, value, allow_zero=False)}
    if attr in ("reverify_after", "reuse_decisions_for", "quarantine_keep"):
        return {attr: _seconds(key, value, allow_zero=True)}
    if attr == "log_format":
        if value not in LOG_FORMATS:
            raise ConfigError(key, f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
        return {attr: value}
    if attr == "log_level":
        if str(value).lower() not in _LOG_LEVELS:
            raise ConfigError(key, f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
        return {attr: str(value).lower()}
    raise ConfigError(key, "unknown setting")


def _pem_path(attr: str, key: str, value: Any) -> Path:
    """A certificate, key or CA file (a CA may also be a directory of them) that can be read
    and holds what it should, so a typo stops start-up instead of every TLS handshake."""
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "expected the path of a PEM file")
    path = Path(value).expanduser()
    if attr in _CA_FILES and path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise ConfigError(key, f"cannot read the directory {path}: permission denied")
        return path
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {(exc.strerror or str(exc)).lower()}") from exc
    if attr in _KEY_FILES:
        if not _PEM_PRIVATE_KEY.search(text):
            raise ConfigError(key, f"{path} holds no PEM private key")
    elif _PEM_CERTIFICATE not in text:
        raise ConfigError(key, f"{path} holds no PEM certificate")
    return path


def _check_tls_pairs(values: dict[str, Any]) -> None:
    """A key needs its certificate, and a certificate its key (unless the file holds both)."""
    for section, cert, key in (
        ("upstream", "upstream_client_cert", "upstream_client_key"),
        ("keystone", "keystone_client_cert", "keystone_client_key"),
        ("server", "tls_cert", "tls_key"),
        ("zone", "zone_client_cert", "zone_client_key"),
        ("zone", "zone_tls_cert", "zone_tls_key"),
    ):
        cert_name, key_name = TOML_KEYS_BY_ATTR[cert], TOML_KEYS_BY_ATTR[key]
        if key in values and cert not in values:
            raise ConfigError(f"{section}.{key_name}", f"set {section}.{cert_name} too")
        key_in_cert_file = cert in values and _PEM_PRIVATE_KEY.search(
            values[cert].read_text(errors="replace")
        )
        if cert in values and key not in values and not key_in_cert_file:
            raise ConfigError(
                f"{section}.{key_name}",
                f"required with {section}.{cert_name} (its file holds no private key)",
            )
    if "tls_client_ca" in values and "tls_cert" not in values:
        raise ConfigError("server.tls_client_ca", "client certificates need server.tls_cert")


def _check_zone(values: dict[str, Any]) -> None:
    """Peers need this node's own address among them, the zone's shared secret and the
    address of the sibling endpoint, which is not the clients' one."""
    if "zone_peers" not in values:
        for attr in ("zone_self", "zone_secret", "zone_listen", *_ZONE_TLS):
            if attr in values:
                raise ConfigError(f"zone.{TOML_KEYS_BY_ATTR[attr]}", "set zone.peers too")
        return
    if "zone_self" not in values:
        raise ConfigError("zone.self", "required with zone.peers: this node's own URL in it")
    if values["zone_self"] not in values["zone_peers"]:
        raise ConfigError("zone.self", f"{values['zone_self']} is not one of zone.peers")
    if "zone_secret" not in values:
        raise ConfigError("zone.secret", "required with zone.peers (the nodes share it)")
    if "zone_listen" not in values:
        raise ConfigError(
            "zone.listen", "required with zone.peers: HOST:PORT of the siblings' own listener"
        )
    host, port = values["zone_listen"]
    client_host = values.get("listen_host", Settings.listen_host)
    if port == values.get("listen_port", Settings.listen_port) and (
        host == client_host or host in _ANY_ADDRESSES or client_host in _ANY_ADDRESSES
    ):
        raise ConfigError("zone.listen", f"{host}:{port} is the clients' address (server.listen)")
    _check_zone_tls(values)


def _check_zone_tls(values: dict[str, Any]) -> None:
    """The zone listener speaks what zone.self says, and a node that asks its siblings for a
    client certificate presents one to them too (they have the same settings)."""
    https = values["zone_self"].startswith("https:")
    if https and "zone_tls_cert" not in values:
        raise ConfigError("zone.tls_cert", "required: zone.self is an https URL")
    if not https and "zone_tls_cert" in values:
        raise ConfigError("zone.self", "expected an https URL: zone.tls_cert is set")
    if "zone_tls_cert" in values and "zone_ca_file" in values and "zone_client_cert" not in values:
        raise ConfigError(
            "zone.client_cert",
            "required with zone.tls_cert and zone.ca_file: the siblings ask for one",
        )


def _seconds(key: str, value: Any, *, allow_zero: bool) -> float:
    number = not isinstance(value, bool) and isinstance(value, int | float)
    if not number or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(key, f"expected a number of seconds {bound}, got {value!r}")
    return float(value)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from exc


def resolve_config_path(explicit: str | None) -> Path | None:
    """The file named by --config, else $EDGECACHE_CONFIG, else the default if it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def load_settings(
    config_path: Path | None, overrides: dict[str, Any], *, require_upstream: bool = True
) -> Settings:
    """Build Settings from the TOML file (if any) with `overrides` (flag name -> value) on top.

    Override keys use the flag's name (`upstream`, `listen`, `cache_dir`, `max_size`). The
    client commands (status, cache, warm) only read where the daemon is: no upstream needed.
    """
    raw: dict[str, tuple[str, Any]] = {}
    if config_path is not None:
        raw.update(_flatten_toml(read_toml(config_path)))
    for attr, value in overrides.items():
        if value is not None:
            raw[attr] = (f"--{attr.replace('_', '-')}", value)
    values: dict[str, Any] = {}
    for attr, (key, value) in raw.items():
        values.update(_coerce(attr, key, value))
    if "upstream" not in values and require_upstream:
        raise ConfigError("upstream.url", "no upstream Glance given (set it or pass --upstream)")
    if "keystone_url" in values:
        for needed in ("username", "password"):
            if f"keystone_{needed}" not in values:
                raise ConfigError(f"keystone.{needed}", "required when keystone.auth_url is set")
    _check_tls_pairs(values)
    _check_zone(values)
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})
