#!/usr/bin/env bash
# Install resid_widgets and what it needs on a fresh machine (idempotent; quick when done before).
#   bash scripts/setup.sh          # the package (+ JupyterLab)
#   bash scripts/setup.sh test     # + the test tools and Debian's Chromium for the browser tests
# With no virtual environment active, it makes and uses one in the checkout (.venv), so a system
# python3 that refuses pip installs (Debian/Ubuntu, PEP 668) works. Other scripts find it through
# scripts/env.sh. PYTHON=... picks the interpreter that creates it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh   # sets PY (the venv's python, or the active environment's)

if ! "$PY" -c "import sys; sys.exit(0)" >/dev/null 2>&1; then
  base=${PYTHON:-python3}
  if ! "$base" -c "import venv, ensurepip" >/dev/null 2>&1; then
    echo "[setup] $base has no venv/ensurepip; installing Debian's python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
  fi
  echo "[setup] creating the virtual environment .venv with $base"
  "$base" -m venv .venv
  source scripts/env.sh
fi

# The frontend bundle is built with npm (by the package's build hook); Debian's nodejs/npm when missing.
if ! command -v npm >/dev/null 2>&1; then
  echo "[setup] installing Debian's nodejs and npm to build the frontend"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

# torch first, pinned to the CPU wheel this workplace provides; elsewhere any torch >= 2.1 works.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" >/dev/null 2>&1; then  # no import: 3 s
  echo "[setup] installing torch"
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
# pip (23 s even when nothing changed) only when needed: the stamp in the environment records the checkout,
# the extras and the hash of pyproject.toml + _version.py at the last install; a `git pull` that changes them
# (dependencies, the version in the installed metadata), another
# checkout, other extras or resid_widgets missing from the environment all reinstall. (An editable install
# needs nothing for source changes; the bundle is rebuilt below when the TypeScript is newer.)
prefix="$("$PY" -c 'import sys; print(sys.prefix)')"
stamp_file="$prefix/.resid_widgets-setup-stamp"
want="$(pwd) [${extras}] $(cat pyproject.toml resid_widgets/_version.py | sha256sum | cut -d' ' -f1)"
installed_here() {  # -I: the checkout itself (the current directory) must not count as installed
  "$PY" -I -c "import importlib.util as u, pathlib, sys; s = u.find_spec('resid_widgets'); sys.exit(not (s and s.origin and pathlib.Path(s.origin).resolve().parents[1] == pathlib.Path(sys.argv[1]).resolve()))" "$(pwd)" >/dev/null 2>&1
}
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] && installed_here; then
  echo "[setup] resid_widgets[${extras}] is installed from this checkout and pyproject.toml / _version.py are unchanged: pip skipped"
else
  echo "[setup] installing resid_widgets[${extras}] into $prefix"
  "$PY" -m pip install --quiet -e ".[${extras}]"
  printf '%s' "$want" > "$stamp_file"
fi
# An editable install builds the bundle once; rebuild it when a TypeScript source or the protocol is newer
# (after a `git pull`, say), so the widget never runs old JavaScript against new Python.
if [ ! -f resid_widgets/static/widget.js ] || [ -n "$(find js/src js/package.json resid_widgets/payload/protocol.json -newer resid_widgets/static/widget.js -print -quit 2>/dev/null)" ]; then
  echo "[setup] building the frontend bundle"
  npm --prefix js install --no-audit --no-fund --silent && npm --prefix js run build --silent
fi
