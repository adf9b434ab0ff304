"""OpenStack's own image tests (tempest + glance-tempest-plugin from PyPI) against the stack.

Tempest lives in a venv of its own (:data:`TEMPEST_REQUIREMENTS`, cached like the stack's and
keyed by its own requirement list, so the stack venv is never rebuilt for it). :func:`tempest_conf`
writes a ``tempest.conf`` for the stack: Keystone v3 with the stack's admin (tempest creates
and removes its own projects and users), the image service only, Glance 33's features, and
``[enforce_scope] glance`` so that glance-tempest-plugin's RBAC tests run. With ``image_region``
the image clients use that catalog region's endpoint (:meth:`OpenStackStack.add_image_region`:
edgecache's URL) instead of RegionOne's Glance, while identity stays on Keystone.

:func:`run_tempest` runs a selection with ``tempest run --subunit`` and returns each test id's
outcome, read from the subunit stream by ``subunit_outcomes.py`` in the tempest venv.
Standard library only on this side, like the rest of the package.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import StackError
from .install import ensure_stack_venv
from .openstack import REGION, OpenStackStack

# tempest is branchless and tests the releases current when it is: tempest 47.0.0 and the
# plugin's 0.17.0 came out with Glance 33.0.0 and Keystone 30.0.0 (PyPI, September 2026).
TEMPEST_REQUIREMENTS: tuple[str, ...] = ("tempest==47.0.0", "glance-tempest-plugin==0.17.0")
_OUTCOMES_SCRIPT = Path(__file__).resolve().parent / "subunit_outcomes.py"


@dataclass(frozen=True)
class Outcome:
    """One test id's result: ``success``, ``fail``, ``skip`` (or subunit's ``xfail``,
    ``uxsuccess``); ``detail`` is the traceback of a failure or the reason for a skip;
    ``seconds``: how long it ran, as subunit says."""

    status: str
    detail: str = ""
    seconds: float | None = None


@dataclass(frozen=True)
class TempestRun:
    outcomes: dict[str, Outcome]
    seconds: float
    workdir: Path


def ensure_tempest_venv(cache_root: Path | None = None) -> Path:
    """A venv with tempest and glance-tempest-plugin (built once, then cached)."""
    return ensure_stack_venv(cache_root, requirements=TEMPEST_REQUIREMENTS)


def tempest_conf(
    stack: OpenStackStack, workdir: Path, *, image_region: str | None = None
) -> dict[str, dict[str, str]]:
    """``tempest.conf`` for the stack, as sections; ``image_region``: the catalog region of
    the image endpoint tempest's image clients use (default: RegionOne's, the real Glance)."""
    admin = stack.admin
    return {
        "DEFAULT": {"log_file": str(workdir / "tempest.log"), "debug": "true"},
        "oslo_concurrency": {"lock_path": str(workdir / "locks")},
        "auth": {
            # tempest creates a project and users per test class and removes them after.
            "use_dynamic_credentials": "true",
            "create_isolated_networks": "false",
            "admin_username": admin.username,
            "admin_password": admin.password,
            "admin_project_name": admin.project_name,
            "admin_domain_name": admin.user_domain_name,
        },
        "identity": {
            "uri_v3": stack.auth_url,
            "region": REGION,
            "v3_endpoint_type": "public",
        },
        "service_available": {
            "glance": "true",
            "nova": "false",
            "neutron": "false",
            "cinder": "false",
            "swift": "false",
            "horizon": "false",
        },
        "image": {
            "region": image_region or REGION,
            "endpoint_type": "public",
            # Glance 33's defaults (image_format in glance-api.conf is not set by the stack).
            "container_formats": "bare,ami,ari,aki,ovf,ova,docker,compressed",
            "disk_formats": "raw,qcow2,ami,ari,aki,vhd,vhdx,vmdk,vdi,iso,ploop",
            # Nothing a test waits for takes long here; a wait that would never end (an import
            # from the web, with no network) gives up after this.
            "build_timeout": "30",
            "build_interval": "1",
            # The stack's Glance runs without its own image cache.
            "image_caching_enabled": "false",
        },
        "image-feature-enabled": {
            # Glance 33 under gunicorn: glance-direct, web-download and copy-image imports,
            # the os_glance_* namespace reserved, secure hashes; no http store, no location
            # API (show_multiple_locations), no conversion.
            "import_image": "true",
            "os_glance_reserved": "true",
            "do_secure_hash": "true",
            "manage_locations": "false",
            "http_store_enabled": "false",
            "image_conversion": "false",
            "image_format_enforcement": "true",
        },
        # Glance 33 enforces scope and new defaults (oslo.policy has no switch left for it):
        # tempest's image tests then use reader personas, and the plugin's RBAC tests run.
        "enforce_scope": {"glance": "true"},
        # glance-tempest-plugin's own option: Glance's policies are project-scoped only.
        "glance_api": {"system_scope_supported": "false"},
        "validation": {"run_validation": "false"},
    }


def write_tempest_conf(path: Path, sections: Mapping[str, Mapping[str, str]]) -> None:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_dict(sections)
    with path.open("w") as out:
        parser.write(out)


def run_tempest(
    venv: Path,
    stack: OpenStackStack,
    workdir: Path,
    regex: str,
    *,
    exclude_regex: str | None = None,
    image_region: str | None = None,
    concurrency: int = 1,
    timeout: float = 900.0,
) -> TempestRun:
    """``tempest run --regex REGEX [--exclude-regex EXCLUDE]`` in ``workdir`` (a new folder
    with its own tempest.conf, stestr repository, subunit stream and log); every test's
    outcome, and the run's time.

    One test at a time by default: Keystone and Glance keep their data in sqlite, which
    refuses a write that races another ("database is locked", a 500) and would make
    outcomes depend on timing."""
    workdir.mkdir(parents=True)
    (workdir / "locks").mkdir()
    conf = workdir / "tempest.conf"
    write_tempest_conf(conf, tempest_conf(stack, workdir, image_region=image_region))
    subunit = workdir / "results.subunit"
    argv = [
        str(venv / "bin" / "tempest"), "run",
        "--config-file", str(conf),
        "--regex", regex,
        "--concurrency", str(concurrency),
        "--subunit",
        *(["--exclude-regex", exclude_regex] if exclude_regex else []),
    ]  # fmt: skip
    env = stack.client_env()
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    started = time.monotonic()
    with subunit.open("wb") as out, (workdir / "tempest-run.log").open("wb") as err:
        # Exit status 1 only says that some test failed: the outcomes say which.
        subprocess.run(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=timeout,
            check=False,
        )
    seconds = time.monotonic() - started
    return TempestRun(read_outcomes(venv, subunit), seconds, workdir)


def read_outcomes(venv: Path, subunit: Path) -> dict[str, Outcome]:
    """Each test id's final outcome in a subunit v2 stream (parsed in the tempest venv)."""
    with subunit.open("rb") as stream:
        result = subprocess.run(
            [str(venv / "bin" / "python"), str(_OUTCOMES_SCRIPT)],
            stdin=stream,
            capture_output=True,
            timeout=120,
            check=False,
        )
    if result.returncode != 0:
        raise StackError(f"could not read {subunit}: {result.stderr.decode(errors='replace')}")
    subunit.with_name("outcomes.jsonl").write_bytes(result.stdout)  # small; kept on failure
    outcomes = {}
    for line in result.stdout.decode().splitlines():
        item = json.loads(line)
        outcomes[item["id"]] = Outcome(item["status"], item["detail"], item["seconds"])
    if not outcomes:
        log = subunit.with_name("tempest-run.log")
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise StackError(f"tempest ran no test; last lines of {log}:\n{tail}")
    return outcomes
