#!/usr/bin/env bash
# Set up (see setup.sh) and run every test tier: unit, browser (Chromium via Playwright), notebooks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
PY=${PYTHON:-python3}
# Rebuild the bundle if a TypeScript source is newer than it (an editable install built it once).
if [ -n "$(find js/src -newer resid_widgets/static/widget.js -print -quit 2>/dev/null)" ] || [ ! -f resid_widgets/static/widget.js ]; then
  npm --prefix js install --no-audit --no-fund --silent && npm --prefix js run build --silent
fi
exec "$PY" -m pytest -q "$@"
