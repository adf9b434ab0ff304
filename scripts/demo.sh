#!/usr/bin/env bash
# The demo: a real Keystone + Glance on loopback, edgecache in front, an image downloaded
# twice through it with the real glance CLI. Sets up the project's own environment (once)
# like scripts/test.sh; everything it starts is stopped when it ends.
#   ./scripts/demo.sh            run it and exit
#   ./scripts/demo.sh --keep     keep it all running until Ctrl-C
#   ./scripts/demo.sh --size 512 a bigger demo image (MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
echo "==> Installing edgecache into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python -m tests.stack.demo "$@"
