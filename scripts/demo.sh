#!/usr/bin/env bash
# Set up, then open the widget on the embedded demo model in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
extra=()
[ "$(id -u)" = "0" ] && extra+=(--allow-root)  # JupyterLab refuses root without it (containers, CI boxes)
exec "${PYTHON:-python3}" -m jupyterlab examples/quickstart.ipynb "${extra[@]}" "$@"
