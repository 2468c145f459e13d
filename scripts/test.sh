#!/usr/bin/env bash
# Set up (see setup.sh) and run every test tier: unit, browser (Chromium via Playwright), notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
source scripts/env.sh   # PY: the checkout's .venv unless an environment is active
# Rebuild the bundle if a TypeScript source or the protocol is newer than it (an editable install built it once).
if [ ! -f resid_widgets/static/widget.js ] || [ -n "$(find js/src resid_widgets/payload/protocol.json -newer resid_widgets/static/widget.js -print -quit 2>/dev/null)" ]; then
  npm --prefix js install --no-audit --no-fund --silent && npm --prefix js run build --silent
fi
exec "$PY" -m pytest -q "$@"
