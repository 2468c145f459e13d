#!/usr/bin/env bash
# Install resid_widgets and what it needs on a fresh machine (idempotent; quick when done before).
#   bash scripts/setup.sh          # the package (+ JupyterLab)
#   bash scripts/setup.sh test     # + the test tools and Debian's Chromium for the browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# torch first, pinned to the CPU wheel this workplace provides; elsewhere any torch >= 2.1 works.
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  "$PY" -m pip install --quiet "torch==2.13.0"
fi

extras="notebook"
if [ "${1:-}" = "test" ]; then
  extras="notebook,test"
  if [ ! -x /usr/bin/chromium ]; then
    echo "[setup] installing Debian's chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
  fi
fi
# -e: the examples and tests use this checkout; the build hook runs `npm install` + the esbuild
# bundle into resid_widgets/static/ when it is missing.
"$PY" -m pip install --quiet -e ".[${extras}]"
