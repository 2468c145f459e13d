#!/usr/bin/env bash
# Set up (see setup.sh) and run every test tier: unit, browser (Chromium via Playwright), notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
source scripts/env.sh   # PY: the checkout's .venv unless an environment is active
exec "$PY" -m pytest -q "$@"
