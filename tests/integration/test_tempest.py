"""OpenStack's own image tests give the same results through edgecache as against Glance.

tempest and glance-tempest-plugin from PyPI (:data:`tests.stack.tempest.TEMPEST_REQUIREMENTS`,
in a cached venv of their own) run the same selection twice, at the same time, each against
a Keystone + Glance stack of its own (identical, fresh, so that neither run sees what the
other left, and sqlite never sees two writers race):

- directly: tempest's image clients use RegionOne's endpoint, the real Glance;
- through edgecache: its stack's catalog has a region ``Edge`` whose image endpoint is
  edgecache (``[upstream]`` that stack's Glance, ``[keystone]`` its service user), and the
  tempest.conf says ``[image] region = Edge``; identity stays on Keystone.

The outcome of every test id (success, fail, skip) must be the same in both runs, except the
test ids in :data:`KNOWN_DIFFERENCES`, each with its reason; a known difference that no longer
differs fails too, so that the list stays true.

The selection: the whole of ``tempest.api.image.v2`` and of the plugin's ``rbac.v2`` takes
4.5 to 6 minutes a run on this 2-core machine (mostly Keystone creating and deleting tempest's
users and projects), so by default the tier runs a subset of 64 test ids: 70 to 100 s for
both runs at once, plus 30 to 40 s to start the two stacks (longer while other work loads
the machine):

- tempest: ``test_images`` (``test_register_upload_get_image_file`` among them),
  ``test_images_negative``, ``test_images_member``, ``test_images_member_negative``,
  ``test_images_tags``, ``test_images_tags_negative``, ``test_versions``, and
  ``admin.test_images`` less ``ImportCopyImagesTest`` (a copy to other stores, which a Glance
  with one store never finishes: it fails in both runs after ``build_timeout``, 30 s each);
- glance-tempest-plugin: the RBAC image tests of project admins, members and readers
  (``test_project_{admin,members,reader}_tests.Image*``) for what edgecache answers itself,
  not only relays: ``test_get_image``, ``test_list_images``, ``test_download_image``,
  ``test_get_image_member``, ``test_list_image_members``.

Left out of the subset: the plugin's RBAC tests of writes (create, update, upload, delete,
members added or changed, deactivate), which edgecache relays untouched, and metadata
definitions (tempest's ``admin.test_images_metadefs_*``, the plugin's metadef RBAC tests),
relayed untouched too. ``EDGECACHE_TEMPEST_FULL=1`` runs the whole of both suites instead
(less ``ImportCopyImagesTest``): 258 test ids, 4.5 to 6 minutes with both runs at once.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.integration.conftest import running
from tests.stack import OpenStackStack, StackError
from tests.stack.edgecache_daemon import EdgecacheDaemon
from tests.stack.install import ensure_stack_venv
from tests.stack.tempest import Outcome, TempestRun, ensure_tempest_venv, run_tempest

EDGE_REGION = "Edge"
SELECTION = (
    r"^tempest\.api\.image\.v2\.(admin\.)?test_images\."
    r"|^tempest\.api\.image\.v2\.test_images_(negative|member|member_negative|tags|tags_negative)\."
    r"|^tempest\.api\.image\.v2\.test_versions\."
    r"|^glance_tempest_plugin\.tests\.rbac\.v2\.test_project_(admin|members|reader)_tests\.Image\w+"
    r"\.test_(get_image|list_images|download_image|get_image_member|list_image_members)(\[|$)"
)
FULL_SELECTION = r"^tempest\.api\.image\.v2\.|^glance_tempest_plugin\.tests\.rbac\.v2\."
EXCLUDED = r"\.ImportCopyImagesTest\."
# The tests issue 20 names: each must have run, and passed against Glance.
NAMED = (
    "tempest.api.image.v2.test_images.BasicOperationsImagesTest"
    ".test_register_upload_get_image_file",
    "glance_tempest_plugin.tests.rbac.v2.test_project_admin_tests.ImageProjectAdminTests"
    ".test_download_image",
    "glance_tempest_plugin.tests.rbac.v2.test_project_members_tests.ImagesProjectMemberTests"
    ".test_download_image",
)
# Test id (without tempest's "[id-...,tags]") -> why its outcome through edgecache differs.
KNOWN_DIFFERENCES: dict[str, str] = {}


def short_id(test_id: str) -> str:
    """A test id without tempest's ``[id-...,smoke]`` suffix."""
    return re.sub(r"\[[^\]]*\]$", "", test_id)


# -- machinery ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tempest_venv() -> Path:
    try:
        return ensure_tempest_venv()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"tempest could not be installed from PyPI: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def stacks(integ_dir: Path) -> Iterator[tuple[OpenStackStack, OpenStackStack]]:
    """Two identical fresh stacks, started at once: one for each run. Keystone caches (its
    in-process cache), which makes tempest's many identity calls several times faster."""
    try:
        venv = ensure_stack_venv()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the stack venv could not be built: {exc}", pytrace=False)
    pair = tuple(
        OpenStackStack(integ_dir / f"tempest-{name}-stack", venv=venv, keystone_cache=True)
        for name in ("direct", "edge")
    )
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(stack.start) for stack in pair]:
                future.result()
    except (StackError, OSError, subprocess.SubprocessError) as exc:
        for stack in pair:
            stack.stop()
        pytest.fail(f"a Keystone + Glance stack could not start: {exc}", pytrace=False)
    try:
        yield pair[0], pair[1]
    finally:
        for stack in pair:
            stack.stop()


@pytest.fixture(scope="module")
def edgecache(
    stacks: tuple[OpenStackStack, OpenStackStack], integ_dir: Path
) -> Iterator[EdgecacheDaemon]:
    """edgecache in front of the second stack's Glance, its image endpoint in region Edge
    (named like the session fixture, so that a failure's report ends with its log)."""
    stack = stacks[1]
    daemon = EdgecacheDaemon(
        integ_dir / "edgecache-tempest", stack.glance_url, keystone=stack.glance_service
    )
    stack.add_image_region(EDGE_REGION, daemon.url)
    yield from running(daemon)


def differences(direct: TempestRun, edge: TempestRun) -> dict[str, tuple[Outcome, Outcome]]:
    """Test ids whose outcome differs (a test missing from one run counts as ``absent``)."""
    absent = Outcome("absent")
    return {
        test_id: (direct.outcomes.get(test_id, absent), edge.outcomes.get(test_id, absent))
        for test_id in sorted(direct.outcomes.keys() | edge.outcomes.keys())
        if direct.outcomes.get(test_id, absent).status != edge.outcomes.get(test_id, absent).status
    }


def tally(run: TempestRun) -> str:
    counts = Counter(outcome.status for outcome in run.outcomes.values())
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))


def last_line(outcome: Outcome) -> str:
    lines = [line.strip() for line in outcome.detail.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def table(rows: dict[str, tuple[Outcome, Outcome]], direct: TempestRun, edge: TempestRun) -> str:
    width = max(len(short_id(test_id)) for test_id in rows)
    out = [f"{'test':<{width}}  {'Glance':<8} edgecache"]
    for test_id, (d, e) in rows.items():
        out.append(f"{short_id(test_id):<{width}}  {d.status:<8} {e.status}")
        for label, outcome in (("  Glance:    ", d), ("  edgecache: ", e)):
            if outcome.status == "fail":
                out.append(label + last_line(outcome))
    out.append(f"(subunit and logs: {direct.workdir} and {edge.workdir})")
    return "\n".join(out)


# -- the check ------------------------------------------------------------------------------


def test_tempest_image_tests_give_the_same_results_through_edgecache(
    tempest_venv: Path,
    stacks: tuple[OpenStackStack, OpenStackStack],
    edgecache: EdgecacheDaemon,
    integ_dir: Path,
) -> None:
    direct_stack, edge_stack = stacks
    selection = FULL_SELECTION if os.environ.get("EDGECACHE_TEMPEST_FULL") == "1" else SELECTION
    with ThreadPoolExecutor(max_workers=2) as pool:
        direct_run = pool.submit(
            run_tempest,
            tempest_venv,
            direct_stack,
            integ_dir / "tempest-direct",
            selection,
            exclude_regex=EXCLUDED,
        )
        edge_run = pool.submit(
            run_tempest,
            tempest_venv,
            edge_stack,
            integ_dir / "tempest-edge",
            selection,
            exclude_regex=EXCLUDED,
            image_region=EDGE_REGION,
        )
        direct, edge = direct_run.result(), edge_run.result()
    print(
        f"\ntempest: {len(direct.outcomes)} test ids; directly {direct.seconds:.0f} s "
        f"({tally(direct)}), through edgecache {edge.seconds:.0f} s ({tally(edge)}), at the "
        f"same time; load average {os.getloadavg()[0]:.1f}"
    )
    for test_id, outcome in direct.outcomes.items():
        if outcome.status == "fail":
            print(f"  fails against Glance: {short_id(test_id)}: {last_line(outcome)}")

    # The edge run went through edgecache (its image data too), the direct one did not.
    metrics = edgecache.metrics()
    assert sum(v for k, v in metrics.items() if k.startswith("edgecache_requests_total")) > 100
    assert metrics.get("edgecache_fills_started_total", 0) >= 1
    # The named tests ran, and passed against Glance.
    for name in NAMED:
        ran = [o.status for test_id, o in direct.outcomes.items() if short_id(test_id) == name]
        assert ran == ["success"], f"{name} against Glance: {ran or 'did not run'}"

    found = differences(direct, edge)
    unexplained = {k: v for k, v in found.items() if short_id(k) not in KNOWN_DIFFERENCES}
    if unexplained:
        report = table(unexplained, direct, edge)
        pytest.fail(f"outcomes through edgecache differ from Glance's:\n{report}", pytrace=False)
    gone = sorted(set(KNOWN_DIFFERENCES) - {short_id(k) for k in found})
    assert not gone, f"known differences that no longer differ (remove them): {gone}"
