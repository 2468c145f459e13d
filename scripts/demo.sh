#!/usr/bin/env bash
# Set up, then open the widget on the embedded demo model in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh   # PY: the checkout's .venv unless an environment is active
extra=()
[ "$(id -u)" = "0" ] && extra+=(--allow-root)  # JupyterLab refuses root without it (containers, CI boxes)
exec "$PY" -m jupyterlab examples/quickstart.ipynb "${extra[@]}" "$@"
