"""The built wheel carries the JS bundle and the demo model, and works when imported from the wheel."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

NEEDED = [
    "resid_widgets/static/widget.js",
    "resid_widgets/static/widget.css",
    "resid_widgets/static/export.js",
    "resid_widgets/demo_model/config.json",
    "resid_widgets/demo_model/model.safetensors",
    "resid_widgets/demo_model/tokenizer.json",
]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("resid_widgets-*.whl")
    return path


def test_wheel_contains_bundle_and_demo_model(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [n for n in NEEDED if n not in names]
    assert not missing, f"the wheel lacks {missing}"
    size = sum(i.file_size for i in zipfile.ZipFile(wheel).infolist() if "/demo_model/" in i.filename)
    assert size <= 10 * 2**20, f"demo model is {size / 2**20:.1f} MB, over the 10 MB budget"
    bundle = zipfile.ZipFile(wheel).read("resid_widgets/static/widget.js").decode()
    for cdn in ("unpkg.com", "cdn.jsdelivr", "esm.sh", "cdnjs"):
        assert cdn not in bundle


def test_package_imported_from_the_wheel(wheel, tmp_path):
    """Install the wheel alone (no source tree on sys.path) and open a widget from it."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(wheel)], check=True)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import resid_widgets, pathlib;"
        "p = pathlib.Path(resid_widgets.__file__).parent; assert str(p).startswith(sys.argv[1]), p;"
        "from resid_widgets import ResidWidget; w = ResidWidget(device='cpu');"
        "print(w.session.name, w._esm[:20] if isinstance(w._esm, str) else w._esm, len(w._payload))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, cwd=tmp_path, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=""))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "demo model" in out.stdout


def test_python_and_js_versions_match():
    import json

    from resid_widgets import __version__

    assert json.loads((ROOT / "js" / "package.json").read_text())["version"] == __version__
