"""Issue 19 items 4 and 12: the `notebook` extra installs Notebook 7, and `scripts/setup.sh` runs pip only when
something changed (23 s on every run before, ahead of a sub-second analysis).

The script runs for real in a scratch copy of the checkout's install inputs, with a scratch virtual environment
whose ``pip`` only records its command line (the environment sees the test venv's packages through a ``.pth``
file, so ``import torch`` succeeds and nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_extra_installs_notebook_7():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {req.split(">")[0].split("=")[0].strip() for req in extras["notebook"]}
    assert {"jupyterlab", "notebook"} <= names, extras["notebook"]
    assert any(req.replace(" ", "").startswith("notebook>=7") for req in extras["notebook"])
    # and the environment built from it has Notebook 7's `jupyter notebook`
    out = subprocess.run([sys.executable, "-m", "notebook", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().split(".")[0] == "7", out


@pytest.fixture()
def checkout(tmp_path):
    """A scratch checkout (the files setup.sh reads) and a scratch venv whose pip only logs."""
    co = tmp_path / "co"
    (co / "scripts").mkdir(parents=True)
    for name in ("setup.sh", "env.sh"):
        shutil.copy(ROOT / "scripts" / name, co / "scripts" / name)
    shutil.copy(ROOT / "pyproject.toml", co / "pyproject.toml")
    (co / "js" / "src").mkdir(parents=True)
    (co / "js" / "package.json").write_text("{}")
    (co / "resid_widgets" / "payload").mkdir(parents=True)
    (co / "resid_widgets" / "payload" / "protocol.json").write_text("{}")
    (co / "resid_widgets" / "__init__.py").write_text("")
    shutil.copy(ROOT / "resid_widgets" / "_version.py", co / "resid_widgets" / "_version.py")
    (co / "resid_widgets" / "static").mkdir()
    bundle = co / "resid_widgets" / "static" / "widget.js"
    bundle.write_text("")
    os.utime(bundle, (2e9, 2e9))  # newer than every input: no npm build
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the checkout as an editable install would put it (first), then torch etc. from the test venv
    (site / "aa_checkout.pth").write_text(str(co) + "\n")
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (site / "pip").mkdir()
    (site / "pip" / "__init__.py").write_text("")
    log = tmp_path / "pip.log"
    (site / "pip" / "__main__.py").write_text(
        f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    env = dict(os.environ, VIRTUAL_ENV=str(venv), PYTHON=str(venv / "bin" / "python"))
    env.pop("CONDA_PREFIX", None)
    env.pop("PYTHONPATH", None)
    return co, env, log, site


def _setup(co: Path, env: dict) -> str:
    out = subprocess.run(["bash", str(co / "scripts" / "setup.sh")], cwd=co, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _pip_runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_setup_skips_pip_when_nothing_changed(checkout):
    co, env, log, site = checkout
    _setup(co, env)
    assert _pip_runs(log) == 1 and "install" in log.read_text() and "[notebook]" in log.read_text()
    t0 = time.perf_counter()
    text = _setup(co, env)
    skipped_s = time.perf_counter() - t0
    assert _pip_runs(log) == 1, "the second run reinstalled"
    out = ROOT / "test-output"
    out.mkdir(exist_ok=True)
    (out / "setup_rerun.json").write_text(json.dumps({"second_run_s": round(skipped_s, 2)}))  # reported, not asserted
    assert "pip skipped" in text
    # a pull that changes pyproject.toml reinstalls ...
    with open(co / "pyproject.toml", "a") as fh:
        fh.write("\n# a new dependency\n")
    _setup(co, env)
    assert _pip_runs(log) == 2
    _setup(co, env)
    assert _pip_runs(log) == 2
    (co / "resid_widgets" / "_version.py").write_text('__version__ = "99.0.0"\n')  # a release: new metadata
    _setup(co, env)
    assert _pip_runs(log) == 3
    # ... and so does a package missing from the environment (uninstalled, or another checkout's): the
    # checkout itself, the current directory, does not count
    (site / "aa_checkout.pth").unlink()
    _setup(co, env)
    assert _pip_runs(log) == 4
