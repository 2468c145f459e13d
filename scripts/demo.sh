#!/usr/bin/env bash
# Set up, then open the widget on the embedded demo model in JupyterLab.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${PYTHON:-python3}" -m jupyterlab examples/quickstart.ipynb "$@"
