#!/usr/bin/env bash
# Set up the project's own environment (once) and run lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
.venv/bin/ruff check edgecache tests
.venv/bin/ruff format --check edgecache tests
.venv/bin/mypy
exec .venv/bin/pytest -ra "$@"
