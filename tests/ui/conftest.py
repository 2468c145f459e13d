"""Fixtures for the browser tests: the built frontend bundle and a headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "js"
STATIC = ROOT / "resid_widgets" / "static"
CHROMIUM = os.environ.get("RESID_WIDGETS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

if str(ROOT) not in sys.path:  # the package may not be pip-installed while developing
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "ui: real Chromium via Playwright (browser tests)")


def _bundle_is_stale() -> bool:
    out = [STATIC / "widget.js", STATIC / "widget.css", STATIC / "export.js"]
    if not all(p.exists() for p in out):
        return True
    inputs = [p for p in (JS_DIR / "src").iterdir() if p.is_file()]
    inputs += [JS_DIR / "package.json", JS_DIR / "tsconfig.json", ROOT / "resid_widgets" / "payload" / "protocol.json"]
    newest = max(p.stat().st_mtime for p in inputs if p.exists())
    return min(p.stat().st_mtime for p in out) < newest


@pytest.fixture(scope="session")
def frontend_bundle() -> tuple[str, str]:
    """(widget.js, widget.css) texts, building them first when missing or older than js/src."""
    if _bundle_is_stale():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("resid_widgets/static/widget.js is missing or stale and npm is not installed")
        if not (JS_DIR / "node_modules").exists():
            cmd = "ci" if (JS_DIR / "package-lock.json").exists() else "install"
            subprocess.run([npm, "--prefix", str(JS_DIR), cmd], check=True, cwd=ROOT)
        subprocess.run([npm, "--prefix", str(JS_DIR), "run", "build"], check=True, cwd=ROOT)
    return (STATIC / "widget.js").read_text(encoding="utf-8"), (STATIC / "widget.css").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def chromium_browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
