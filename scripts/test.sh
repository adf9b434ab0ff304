#!/usr/bin/env bash
# Set up the project's own environment (once) and run lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the suite needs: venv support (Debian's python3 lacks ensurepip without it;
# the integration tests build a virtualenv for Keystone + Glance), the tools
# tests/component/test_packaging.py runs (systemd-analyze from systemd, promtool from prometheus)
# HAProxy for the zone test (tests/component/test_haproxy.py) and nginx for the benchmark smoke run
# (tests/component/test_benchmarks_quick.py). Installed only when missing and we are root;
# otherwise those tests fail saying what to install.
missing=()
python3 -c "import ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v promtool >/dev/null || missing+=(prometheus)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Only promtool was wanted: on a host run by systemd, Debian's package also enables and
    # starts a Prometheus server, which these tests have no use for.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus.service || true
    fi
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check edgecache tests
.venv/bin/ruff format --check edgecache tests
.venv/bin/mypy
if [ "$#" -gt 0 ]; then  # a selection of tests, as pytest takes it
    exec .venv/bin/pytest -ra "$@"
fi
# The whole suite: the integration tier (real Keystone, Glance, clients and nova, mostly
# waiting on them) runs beside the others (in-process and real-process tests, CPU-bound), on
# a machine of two cores; each tier's output is printed whole, the integration tier's last.
integration_log=$(mktemp)
trap 'rm -f "$integration_log"' EXIT
.venv/bin/pytest -ra tests/integration >"$integration_log" 2>&1 &
integration=$!
status=0
.venv/bin/pytest -ra tests/unit tests/component tests/upgrade tests/reliability || status=$?
wait "$integration" || status=$?
echo "=== tests/integration ==="
cat "$integration_log"
exit "$status"
