"""A real Keystone + Glance on loopback, for integration tests and demos.

Everything OpenStack runs as subprocesses from the stack venv (see :mod:`.install`); this
module itself uses the standard library only, so the project's test venv can import it.

Layout of ``base_dir``::

    keystone/  keystone.conf  keystone.db  fernet-keys/  credential-keys/  server.log  access.log
    glance/    glance-api.conf  glance.db  images/  staging/  tasks/  locks/  server.log  access.log

Each server is a gunicorn master (one worker, eight threads) in its own process group, so
stopping it takes its workers along. A "lifeline" pipe (see ``wsgi/gunicorn_conf.py``) makes
the servers exit by themselves if the process that started them dies without cleaning up.
"""

from __future__ import annotations

import atexit
import configparser
import contextlib
import dataclasses
import grp
import json
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from . import rest
from .errors import StackError
from .install import ensure_stack_venv

log = logging.getLogger(__name__)

WSGI_DIR = Path(__file__).resolve().parent / "wsgi"
REGION = "RegionOne"
DEFAULT_DOMAIN = "Default"
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(r)s" %(s)s %(B)s %(M)sms'
_ACCESS_LINE = re.compile(
    r'"GET (?P<path>[^ ?"]+)\S* HTTP/[0-9.]+" (?P<status>\d{3}) (?P<bytes>\d+|-) '
)
# A Glance policy rule an operator might write ("restrict download by image property"): images
# with the property edge_admin_only='true' may be downloaded by admins only; otherwise Glance
# 33's default download_image rule.
ADMIN_ONLY_PROPERTY = "edge_admin_only"
_DEFAULT_DOWNLOAD = (
    "role:member and (project_id:%(project_id)s or project_id:%(member_id)s"
    " or 'community':%(visibility)s or 'public':%(visibility)s or 'shared':%(visibility)s)"
)
GLANCE_POLICY = {
    "download_image": f"rule:context_is_admin or (not 'true':%({ADMIN_ONLY_PROPERTY})s"
    f" and ({_DEFAULT_DOWNLOAD}))"
}
_LOOPBACK = "127.0.0.1,localhost,::1"

Visibility = Literal["public", "private", "shared", "community"]
_T = TypeVar("_T")


@dataclass(frozen=True)
class Credentials:
    """A Keystone user scoped to one project, as a client would be configured."""

    auth_url: str
    username: str
    password: str
    project_name: str
    user_id: str
    project_id: str
    user_domain_name: str = DEFAULT_DOMAIN
    project_domain_name: str = DEFAULT_DOMAIN
    region_name: str = REGION

    def as_env(self) -> dict[str, str]:
        """The ``OS_*`` variables that python-glanceclient and openstacksdk read."""
        return {
            "OS_AUTH_TYPE": "password",
            "OS_AUTH_URL": self.auth_url,
            "OS_IDENTITY_API_VERSION": "3",
            "OS_USERNAME": self.username,
            "OS_PASSWORD": self.password,
            "OS_PROJECT_NAME": self.project_name,
            "OS_USER_DOMAIN_NAME": self.user_domain_name,
            "OS_PROJECT_DOMAIN_NAME": self.project_domain_name,
            "OS_REGION_NAME": self.region_name,
            "OS_INTERFACE": "public",
        }


@dataclass(frozen=True)
class Token:
    """A project-scoped Keystone token."""

    value: str
    expires_at: datetime
    user_id: str
    project_id: str


def get_token(creds: Credentials) -> Token:
    """Authenticate with a password (``POST /v3/auth/tokens``) and return the token."""
    auth = {
        "identity": {
            "methods": ["password"],
            "password": {
                "user": {
                    "name": creds.username,
                    "domain": {"name": creds.user_domain_name},
                    "password": creds.password,
                }
            },
        },
        "scope": {
            "project": {"name": creds.project_name, "domain": {"name": creds.project_domain_name}}
        },
    }
    response = rest.request(
        "POST", f"{creds.auth_url}/auth/tokens", json_body={"auth": auth}, expect={201}
    )
    body = response.json()["token"]
    return Token(
        value=response.headers["X-Subject-Token"],
        expires_at=datetime.fromisoformat(body["expires_at"]),
        user_id=body["user"]["id"],
        project_id=body["project"]["id"],
    )


def _token_value(token: Token | str) -> str:
    return token.value if isinstance(token, Token) else token


class OpenStackStack:
    """Keystone + Glance under gunicorn on free loopback ports, with sqlite and a file store.

    Use as a context manager, or call :meth:`start` and :meth:`stop` (which is also
    registered with ``atexit``). ``base_dir`` must be missing or empty.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        venv: Path | None = None,
        host: str = "127.0.0.1",
        keystone_cache: bool = False,
    ):
        """``venv``: a stack venv (default: :func:`ensure_stack_venv`, at :meth:`start`);
        ``host``: the IPv4 loopback address both services listen on; ``keystone_cache``:
        Keystone keeps tokens, assignments and catalog in an in-process cache (its ``[cache]``
        with dogpile's memory backend, coherent with one Keystone process), which makes its
        answers several times faster for clients that call it a lot (tempest)."""
        self.base_dir = Path(base_dir).resolve()
        self.host = host
        self._venv = venv
        self._keystone_cache = keystone_cache
        self._admin_password = _new_password()
        self._glance_password = _new_password()
        self._ports: tuple[int, int] | None = None
        self._lifeline: tuple[int, int] | None = None
        self._admin: Credentials | None = None
        self._glance_service: Credentials | None = None
        self._admin_token: Token | None = None
        self._keystone: _Server | None = None
        self._glance: _Server | None = None
        self._glance_tls: _Server | None = None
        self._glance_cache: _Server | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Configure and start both services; return once Glance answers an authenticated call."""
        if self._ports is not None:
            raise StackError("stack already started")
        started = time.monotonic()
        self._prepare_base_dir()
        venv = self._venv or ensure_stack_venv()
        self._venv = venv
        self._ports = _free_ports(self.host)
        self._lifeline = os.pipe()
        atexit.register(self.stop)
        try:
            self._start_services()
        except BaseException:
            self.stop()
            raise
        log.info(
            "stack up in %.1f s: keystone %s, glance %s",
            time.monotonic() - started,
            self.keystone_url,
            self.glance_url,
        )
        return self

    def stop(self) -> None:
        """Stop every process the stack started (idempotent)."""
        for server in (self._glance_cache, self._glance_tls, self._glance, self._keystone):
            if server is not None:
                server.stop()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
        self._lifeline = None
        self._ports = None
        atexit.unregister(self.stop)

    def stop_glance(self, *, kill: bool = False) -> None:
        """Stop only Glance: gracefully, or with ``kill`` abruptly (like a cut uplink)."""
        self._require(self._glance).stop(kill=kill)

    def start_glance(self) -> None:
        """Start Glance again on the same port with the same data and wait until it serves."""
        glance = self._require(self._glance)
        glance.start(self._require(self._lifeline)[0])
        glance.wait_ready(f"{self.glance_url}/healthcheck")

    def serve_glance_over_tls(self, certfile: Path, keyfile: Path, cafile: Path) -> str:
        """A second gunicorn serving the same Glance (same database and store) over HTTPS
        (``--certfile``/``--keyfile``); returns its ``https://`` URL once it answers,
        verified against ``cafile``. Stopped with the stack."""
        if self._glance_tls is not None:
            raise StackError("Glance is already served over TLS")
        port = _free_ports(self.host)[0]
        (self.base_dir / "glance-tls").mkdir(exist_ok=True)
        server = self._gunicorn(
            "glance-tls",
            "glance.wsgi.api:application",
            port,
            "--certfile", str(certfile), "--keyfile", str(keyfile),
        )  # fmt: skip
        self._glance_tls = server
        server.start(self._require(self._lifeline)[0])
        url = f"https://{self.host}:{port}"
        server.wait_ready(f"{url}/healthcheck", tls=ssl.create_default_context(cafile=cafile))
        return url

    def serve_glance_with_cache(self, policy: Mapping[str, str]) -> str:
        """A second gunicorn serving the same Glance (same database and store) with its own
        image cache on, so that its cache management API answers, and ``policy`` as its
        policy file; returns its URL once it answers. Stopped with the stack."""
        if self._glance_cache is not None:
            raise StackError("Glance is already served with its image cache on")
        port = _free_ports(self.host)[0]
        url = f"http://{self.host}:{port}"
        d = self.base_dir / "glance-cache"
        (d / "image-cache").mkdir(parents=True, exist_ok=True)
        conf = configparser.ConfigParser(interpolation=None)
        conf.read(self.base_dir / "glance" / "glance-api.conf")
        conf["DEFAULT"]["image_cache_dir"] = str(d / "image-cache")
        conf["DEFAULT"]["worker_self_reference_url"] = url
        conf["oslo_policy"]["policy_file"] = str(d / "policy.yaml")
        with (d / "glance-api.conf").open("w") as out:
            conf.write(out)
        (d / "policy.yaml").write_text(json.dumps(policy))
        server = self._gunicorn(
            "glance-cache", "glance.wsgi.api:application", port, glance_config=d
        )
        self._glance_cache = server
        server.start(self._require(self._lifeline)[0])
        server.wait_ready(f"{url}/healthcheck")
        return url

    def restart_glance(self) -> None:
        """Graceful stop, then :meth:`start_glance`."""
        self.stop_glance()
        self.start_glance()

    # -- what tests read ----------------------------------------------------------------

    @property
    def keystone_url(self) -> str:
        return f"http://{self.host}:{self._require(self._ports)[0]}"

    @property
    def auth_url(self) -> str:
        return f"{self.keystone_url}/v3"

    @property
    def glance_url(self) -> str:
        return f"http://{self.host}:{self._require(self._ports)[1]}"

    @property
    def admin(self) -> Credentials:
        """The bootstrap admin (admin role in the ``admin`` project)."""
        return self._require(self._admin)

    @property
    def glance_service(self) -> Credentials:
        """Glance's own service user (``glance``, admin role in the ``service`` project), as
        a service in front of Glance (edgecache's ``[keystone]`` section) would be configured."""
        return self._require(self._glance_service)

    @property
    def bin_dir(self) -> Path:
        """The stack venv's ``bin`` (``glance`` CLI, ``gunicorn``, ``keystone-manage``...)."""
        return self._require(self._venv) / "bin"

    @property
    def glance_access_log(self) -> Path:
        return self.base_dir / "glance" / "access.log"

    def as_dict(self) -> dict[str, Any]:
        """URLs, admin credentials and paths, as ``python -m tests.stack up`` prints them."""
        return {
            "auth_url": self.auth_url,
            "keystone_url": self.keystone_url,
            "glance_url": self.glance_url,
            "region_name": REGION,
            "admin": dataclasses.asdict(self.admin),
            "env": self.admin.as_env(),
            "glance_access_log": str(self.glance_access_log),
            "bin_dir": str(self.bin_dir),
            "base_dir": str(self.base_dir),
        }

    # -- helpers for tests --------------------------------------------------------------

    def admin_token(self) -> Token:
        """A project-scoped admin token, renewed when less than five minutes remain."""
        token = self._admin_token
        if token is None or token.expires_at - datetime.now(UTC) < timedelta(minutes=5):
            token = self._admin_token = get_token(self.admin)
        return token

    def create_project_user(self, name: str) -> Credentials:
        """Create project ``name`` and user ``name``, a ``member`` (and ``reader``) of it."""
        project_id = self._create_project(name)
        password = _new_password()
        user_id = self._create_user(name, password, project_id)
        for role in ("member", "reader"):
            role_id = self._role_id(role)
            if role_id is not None:
                self._grant(project_id, user_id, role_id)
        return Credentials(self.auth_url, name, password, name, user_id, project_id)

    def create_user_in(self, project: Credentials, name: str, roles: Sequence[str]) -> Credentials:
        """A new user ``name`` with exactly ``roles`` in ``project``'s project."""
        password = _new_password()
        user_id = self._create_user(name, password, project.project_id)
        for role in roles:
            self._grant(project.project_id, user_id, self._require(self._role_id(role)))
        return Credentials(
            self.auth_url, name, password, project.project_name, user_id, project.project_id
        )

    def add_image_region(self, region: str, url: str) -> None:
        """A catalog region ``region`` whose ``image`` endpoints (public, internal, admin) are
        ``url``: a client told to use that region (tempest's ``[image] region``) reaches the
        image service there, e.g. through edgecache; RegionOne's endpoints stay as they are."""
        self._keystone_call("POST", "/regions", {"region": {"id": region}})
        services = self._keystone_call("GET", "/services?type=image")["services"]
        for interface in ("public", "internal", "admin"):
            endpoint = {
                "service_id": services[0]["id"],
                "interface": interface,
                "url": url,
                "region_id": region,
            }
            self._keystone_call("POST", "/endpoints", {"endpoint": endpoint})

    def revoke_role(self, user: Credentials, role: str) -> None:
        role_id = self._require(self._role_id(role))
        self._keystone_call(
            "DELETE", f"/projects/{user.project_id}/users/{user.user_id}/roles/{role_id}"
        )

    def image_action(self, image_id: str, action: str) -> None:
        """``deactivate`` or ``reactivate`` an image, as admin."""
        url = f"{self.glance_url}/v2/images/{image_id}/actions/{action}"
        rest.request("POST", url, token=self.admin_token().value, expect={204})

    def create_image(
        self,
        token: Token | str,
        name: str,
        data: bytes | Path,
        *,
        visibility: Visibility = "private",
        properties: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Create a raw/bare image, upload ``data`` (bytes, or a file streamed from disk),
        and return Glance's image record (``id``, ``size``, ``checksum``, ``os_hash_value``...).

        Only admins may create ``public`` images.
        """
        meta = {
            "name": name,
            "visibility": visibility,
            "disk_format": "raw",
            "container_format": "bare",
            **(properties or {}),
        }
        images = f"{self.glance_url}/v2/images"
        tok = _token_value(token)
        created = rest.request("POST", images, token=tok, json_body=meta, expect={201})
        image_id = created.json()["id"]
        self._upload(tok, image_id, data)
        image: dict[str, Any] = rest.request(
            "GET", f"{images}/{image_id}", token=tok, expect={200}
        ).json()
        return image

    def share_image(self, image_id: str, owner_token: Token | str, member: Credentials) -> None:
        """Add ``member``'s project to a ``shared`` image and accept it as that member."""
        members = f"{self.glance_url}/v2/images/{image_id}/members"
        rest.request(
            "POST",
            members,
            token=_token_value(owner_token),
            json_body={"member": member.project_id},
            expect={200},
        )
        rest.request(
            "PUT",
            f"{members}/{member.project_id}",
            token=get_token(member).value,
            json_body={"status": "accepted"},
            expect={200},
        )

    def count_image_downloads(
        self, image_id: str, *, at_least: int = 0, timeout: float = 5.0
    ) -> int:
        """How many ``GET /v2/images/<id>/file`` Glance answered with 200 or 206.

        gunicorn logs a request only after sending its last byte, so a client can finish
        reading just before the line is written: with ``at_least``, poll up to ``timeout``
        seconds for the count to reach it (the count is returned either way). A transfer
        cut short by :meth:`stop_glance` is never logged.
        """
        deadline = time.monotonic() + timeout
        while True:
            count = self._count_downloads(f"/v2/images/{image_id}/file")
            if count >= at_least or time.monotonic() >= deadline:
                return count
            time.sleep(0.05)

    def glance_cli(
        self,
        creds: Credentials,
        *args: str,
        image_url: str | None = None,
        check: bool = True,
        timeout: float = 600.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run the stack venv's ``glance`` CLI as ``creds``; ``image_url`` overrides the
        catalog's Glance (point it at edgecache). Output is text: download with ``--file``."""
        override = ["--os-image-url", image_url] if image_url else []
        return subprocess.run(
            [str(self.bin_dir / "glance"), *override, *args],
            env=self.client_env(creds),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def client_env(self, creds: Credentials | None = None) -> dict[str, str]:
        """The environment for running the stack venv's tools (as ``creds``, if given).

        None of the caller's own ``OS_*`` settings or Python paths leak in, the stack venv
        comes first on PATH, and loopback is never sent through an HTTP proxy.
        """
        dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("OS_")}
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        no_proxy = ",".join(filter(None, [env.get("no_proxy"), _LOOPBACK]))
        env["no_proxy"] = env["NO_PROXY"] = no_proxy
        return env | (creds.as_env() if creds else {})

    # -- start-up -----------------------------------------------------------------------

    def _prepare_base_dir(self) -> None:
        if self.base_dir.exists() and any(self.base_dir.iterdir()):
            raise StackError(f"base dir {self.base_dir} is not empty")
        for sub in ("keystone", "glance/images", "glance/staging", "glance/tasks", "glance/locks"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)

    def _start_services(self) -> None:
        self._write_keystone_conf()
        self._write_glance_conf()
        self._write_glance_policy()
        # keystone-manage and glance-manage each take seconds of imports: overlap them.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(self._setup_keystone), pool.submit(self._setup_glance_db)]
            for future in futures:
                future.result()
        lifeline = self._require(self._lifeline)[0]
        keystone_port, glance_port = self._require(self._ports)
        self._keystone = self._gunicorn("keystone", "keystone_wsgi:application", keystone_port)
        self._glance = self._gunicorn("glance", "glance.wsgi.api:application", glance_port)
        self._keystone.start(lifeline)
        self._glance.start(lifeline)
        self._keystone.wait_ready(self.auth_url)
        self._admin = self._bootstrap_admin_credentials()
        self._register_glance()
        self._glance.wait_ready(f"{self.glance_url}/healthcheck")
        # One authenticated call proves the whole chain: token, authtoken middleware, db.
        rest.request(
            "GET", f"{self.glance_url}/v2/images", token=self.admin_token().value, expect={200}
        )

    def _write_keystone_conf(self) -> None:
        d = self.base_dir / "keystone"
        _write_ini(
            d / "keystone.conf",
            {
                "database": {"connection": f"sqlite:///{d / 'keystone.db'}"},
                "token": {"provider": "fernet"},
                "fernet_tokens": {"key_repository": str(d / "fernet-keys")},
                "fernet_receipts": {"key_repository": str(d / "fernet-keys")},
                "credential": {"key_repository": str(d / "credential-keys")},
                # bcrypt's default cost makes every password authentication take ~0.3 s.
                "identity": {"password_hash_rounds": "4"},
                **(
                    {"cache": {"enabled": "true", "backend": "dogpile.cache.memory"}}
                    if self._keystone_cache
                    else {}
                ),
            },
        )

    def _write_glance_conf(self) -> None:
        d = self.base_dir / "glance"
        paste_ini = self._require(self._venv) / "etc" / "glance" / "glance-api-paste.ini"
        _write_ini(
            d / "glance-api.conf",
            {
                "DEFAULT": {"enabled_backends": "local:file"},
                "database": {"connection": f"sqlite:///{d / 'glance.db'}"},
                "glance_store": {"default_backend": "local"},
                "local": {"filesystem_store_datadir": str(d / "images")},
                "os_glance_staging_store": {"filesystem_store_datadir": str(d / "staging")},
                "os_glance_tasks_store": {"filesystem_store_datadir": str(d / "tasks")},
                "oslo_concurrency": {"lock_path": str(d / "locks")},
                # "keystone", not "keystone+caching": Glance's own image cache stays off.
                "paste_deploy": {"flavor": "keystone", "config_file": str(paste_ini)},
                "oslo_policy": {"policy_file": str(d / "policy.yaml")},
                "keystone_authtoken": {
                    "www_authenticate_uri": self.auth_url,
                    "auth_url": self.auth_url,
                    "auth_type": "password",
                    "interface": "public",
                    "region_name": REGION,
                    "user_domain_name": DEFAULT_DOMAIN,
                    "project_domain_name": DEFAULT_DOMAIN,
                    "project_name": "service",
                    "username": "glance",
                    "password": self._glance_password,
                },
            },
        )

    def _write_glance_policy(self) -> None:
        (self.base_dir / "glance" / "policy.yaml").write_text(json.dumps(GLANCE_POLICY))

    def _setup_keystone(self) -> None:
        conf = str(self.base_dir / "keystone" / "keystone.conf")
        manage = [str(self.bin_dir / "keystone-manage"), "--config-file", conf]
        owner = [
            "--keystone-user",
            pwd.getpwuid(os.getuid()).pw_name,
            "--keystone-group",
            grp.getgrgid(os.getgid()).gr_name,
        ]
        url = self.auth_url
        self._run("keystone", [*manage, "db_sync"])
        self._run("keystone", [*manage, "fernet_setup", *owner])
        self._run("keystone", [*manage, "credential_setup", *owner])
        self._run(
            "keystone",
            [
                *manage,
                "bootstrap",
                "--bootstrap-username", "admin",
                "--bootstrap-project-name", "admin",
                "--bootstrap-role-name", "admin",
                "--bootstrap-service-name", "keystone",
                "--bootstrap-region-id", REGION,
                "--bootstrap-admin-url", url,
                "--bootstrap-internal-url", url,
                "--bootstrap-public-url", url,
            ],
            # Kept out of argv, where the process list would show it.
            extra_env={"OS_BOOTSTRAP_PASSWORD": self._admin_password},
        )  # fmt: skip

    def _setup_glance_db(self) -> None:
        conf = str(self.base_dir / "glance" / "glance-api.conf")
        self._run("glance", [str(self.bin_dir / "glance-manage"), "--config-file", conf, "db_sync"])

    def _bootstrap_admin_credentials(self) -> Credentials:
        creds = Credentials(self.auth_url, "admin", self._admin_password, "admin", "", "")
        token = get_token(creds)
        self._admin_token = token
        return dataclasses.replace(creds, user_id=token.user_id, project_id=token.project_id)

    def _register_glance(self) -> None:
        """The ``glance`` service user (admin in ``service``) and the ``image`` catalog entry."""
        project_id = self._create_project("service")
        user_id = self._create_user("glance", self._glance_password, project_id)
        self._grant(project_id, user_id, self._require(self._role_id("admin")))
        self._glance_service = Credentials(
            self.auth_url, "glance", self._glance_password, "service", user_id, project_id
        )
        service = self._keystone_call(
            "POST", "/services", {"service": {"type": "image", "name": "glance", "enabled": True}}
        )
        for interface in ("public", "internal", "admin"):
            endpoint = {
                "service_id": service["service"]["id"],
                "interface": interface,
                "url": self.glance_url,
                "region_id": REGION,
            }
            self._keystone_call("POST", "/endpoints", {"endpoint": endpoint})

    def _gunicorn(
        self, name: str, app: str, port: int, *options: str, glance_config: Path | None = None
    ) -> _Server:
        """``glance_config``: the folder of Glance's configuration (default ``glance/``)."""
        d = self.base_dir / name
        argv = [
            str(self.bin_dir / "gunicorn"),
            "--config", str(WSGI_DIR / "gunicorn_conf.py"),
            "--bind", f"{self.host}:{port}",
            "--workers", "1",
            "--threads", "8",
            "--timeout", "900",
            "--graceful-timeout", "5",
            "--chdir", str(d),
            "--pythonpath", str(WSGI_DIR),
            "--access-logfile", str(d / "access.log"),
            "--access-logformat", ACCESS_LOG_FORMAT,
            *options,
            app,
        ]  # fmt: skip
        env = self.client_env() | {
            "OS_KEYSTONE_CONFIG_DIR": str(self.base_dir / "keystone"),
            "OS_GLANCE_CONFIG_DIR": str(glance_config or self.base_dir / "glance"),
        }
        return _Server(name, argv, env, d / "server.log")

    # -- Keystone administration --------------------------------------------------------

    def _keystone_call(self, method: str, path: str, body: Any = None) -> Any:
        expect = {200, 201, 204}
        token = self.admin_token().value
        url = f"{self.auth_url}{path}"
        response = rest.request(method, url, token=token, json_body=body, expect=expect)
        return response.json() if response.body else None

    def _create_project(self, name: str) -> str:
        body = {"project": {"name": name, "domain_id": "default", "enabled": True}}
        project_id: str = self._keystone_call("POST", "/projects", body)["project"]["id"]
        return project_id

    def _create_user(self, name: str, password: str, project_id: str) -> str:
        user = {
            "name": name,
            "password": password,
            "domain_id": "default",
            "default_project_id": project_id,
            "enabled": True,
        }
        user_id: str = self._keystone_call("POST", "/users", {"user": user})["user"]["id"]
        return user_id

    def _role_id(self, name: str) -> str | None:
        roles = self._keystone_call("GET", f"/roles?name={name}")["roles"]
        return roles[0]["id"] if roles else None

    def _grant(self, project_id: str, user_id: str, role_id: str) -> None:
        self._keystone_call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{role_id}")

    # -- plumbing -----------------------------------------------------------------------

    def _upload(self, token: str, image_id: str, data: bytes | Path) -> None:
        url = f"{self.glance_url}/v2/images/{image_id}/file"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, bytes):
            rest.request("PUT", url, token=token, body=data, headers=headers, expect={204})
            return
        with data.open("rb") as body:
            headers["Content-Length"] = str(data.stat().st_size)
            rest.request(
                "PUT", url, token=token, body=body, headers=headers, expect={204}, timeout=900
            )

    def _count_downloads(self, path: str) -> int:
        try:
            lines = self.glance_access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return 0
        matches = (_ACCESS_LINE.search(line) for line in lines)
        return sum(
            1
            for m in matches
            if m and m["path"] == path and m["status"] in ("200", "206") and not _a_check(m)
        )

    def _run(
        self, service: str, argv: list[str], extra_env: Mapping[str, str] | None = None
    ) -> None:
        log_path = self.base_dir / service / "setup.log"
        with log_path.open("ab") as out:
            result = subprocess.run(
                argv,
                env=self.client_env() | dict(extra_env or {}),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=600,
            )
        if result.returncode != 0:
            raise StackError(
                f"{Path(argv[0]).name} {argv[3]} failed with exit code {result.returncode}; "
                f"last lines of {log_path}:\n{_tail(log_path)}"
            )

    @staticmethod
    def _require(value: _T | None) -> _T:
        if value is None:
            raise StackError("the stack is not running (call start() first)")
        return value


class _Server:
    """One gunicorn master and its workers, in a process group of their own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, lifeline_fd: int) -> None:
        if self._proc is not None:
            raise StackError(f"{self.name} is already running")
        env = self.env | {"EDGECACHE_STACK_LIFELINE_FD": str(lifeline_fd)}
        with self.log_path.open("ab") as out:
            self._proc = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(lifeline_fd,),
            )

    def wait_ready(
        self, url: str, timeout: float = 180.0, tls: ssl.SSLContext | None = None
    ) -> None:
        """Poll ``url`` until it answers 200; fail early if the server exits."""
        proc = self._proc
        if proc is None:
            raise StackError(f"{self.name} is not running")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
                )
            try:
                if rest.request("GET", url, timeout=5.0, tls=tls).status == 200:
                    return
            except OSError:
                pass  # not listening or still loading the app
            time.sleep(0.1)
        raise StackError(
            f"{self.name} not ready at {url} after {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name, timeout)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # Workers whose master died first would otherwise linger in the group.
        _signal_group(proc.pid, signal.SIGKILL)


def _new_password() -> str:
    """Hex, so that it never starts with "-" and is never taken for a command-line option."""
    return secrets.token_hex(16)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _a_check(access: re.Match[str]) -> bool:
    """edgecache's one-byte GET asking Glance's download decision, not a transfer."""
    return access["status"] == "206" and access["bytes"] == "1"


def _free_ports(host: str) -> tuple[int, int]:
    """Two ports the kernel hands out for port 0; both sockets are held at once so they differ."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        first, second = (sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    return first, second


def _write_ini(path: Path, sections: Mapping[str, Mapping[str, str]]) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    with path.open("w") as out:
        parser.write(out)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
