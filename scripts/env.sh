# Sourced by the scripts: PY = the Python to use.
# An active virtual environment (or conda env) wins; otherwise the checkout's own .venv.
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=${PYTHON:-python}
else
  PY="$(pwd)/.venv/bin/python"
fi
export PATH="$(dirname "$PY"):$PATH"
