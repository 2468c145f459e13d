"""Issue 19.3: the widget owns the keys it handles, in JupyterLab 4 and in Notebook 7.

In each front end: run the widget's cell, click a heatmap cell (then, separately, the layer slider), press the
arrow keys, Home and End, and check that the kernel's ``w.layer`` followed and that the notebook's active cell
did not move (Notebook 7's Lumino handles keydown on the document in the capture phase, so arrow keys moved
between cells there). A visible hint names the keys. Screenshots: ``test-output/keys-<app>.png``.
"""

from __future__ import annotations

import pytest

from conftest import ROOT
from test_jupyterlab import Kernel, _run_first_cell, _wait, lab, notebook7  # noqa: F401  (fixtures reused)

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output"

ACTIVE_CELL = """() => { const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
  return cells.findIndex(c => c.classList.contains('jp-mod-active')); }"""


def _keys_work(page, kernel, app: str) -> None:
    R = kernel.eval("w.analysis.n_rows")
    band = page.locator(".rw-layer-band").first
    canvas = page.locator(".rw-heatmap-canvas").first
    rh = float(canvas.get_attribute("data-row-height"))
    cw = float(canvas.get_attribute("data-cell-width"))

    # the hint is on screen, below the heatmap, and names the keys
    hint = page.locator(".rw-keys-hint").first
    assert hint.is_visible()
    text = hint.inner_text()
    assert "←" in text and "→" in text and "Home" in text and "Esc" in text, text

    # 1. click a heatmap cell (row 2), then keys
    page.locator(".rw-heatmap-overlay").first.click(position={"x": cw / 2, "y": 2 * rh + rh / 2})
    _wait(lambda: page.evaluate(ACTIVE_CELL) == 0, what="the widget's cell to be the active cell")
    kernel.eval("w.layer")  # round trip
    start = int(band.get_attribute("data-layer"))
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    expect = max(0, start - 2)
    assert int(band.get_attribute("data-layer")) == expect
    _wait(lambda: kernel.eval("w.layer") == expect, what=f"w.layer == {expect} after ArrowUp x2 ({app})")
    assert page.evaluate(ACTIVE_CELL) == 0, f"{app}: the arrow keys moved the notebook's active cell"
    page.keyboard.press("End")
    _wait(lambda: kernel.eval("w.layer") == R - 1, what=f"w.layer == {R - 1} after End ({app})")
    page.keyboard.press("ArrowLeft")
    _wait(lambda: kernel.eval("w.layer") == R - 2, what=f"w.layer == {R - 2} after ArrowLeft ({app})")
    page.keyboard.press("Home")
    _wait(lambda: kernel.eval("w.layer") == 0, what=f"w.layer == 0 after Home ({app})")
    page.keyboard.press("ArrowDown")
    _wait(lambda: kernel.eval("w.layer") == 1, what=f"w.layer == 1 after ArrowDown ({app})")
    assert page.evaluate(ACTIVE_CELL) == 0, f"{app}: a key moved the notebook's active cell"

    # 2. click the layer slider, then keys
    slider = page.locator(".rw-layer-slider").first
    slider.click()
    page.keyboard.press("Home")
    _wait(lambda: kernel.eval("w.layer") == 0, what=f"w.layer == 0 after Home on the slider ({app})")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    _wait(lambda: kernel.eval("w.layer") == 3, what=f"w.layer == 3 after ArrowRight x3 on the slider ({app})")
    page.keyboard.press("ArrowDown")  # a range input: down = lower
    _wait(lambda: kernel.eval("w.layer") == 2, what=f"w.layer == 2 after ArrowDown on the slider ({app})")
    assert page.evaluate(ACTIVE_CELL) == 0, f"{app}: the slider's keys moved the notebook's active cell"
    page.locator(".jp-Cell").first.screenshot(path=str(OUT / f"keys-{app}.png"))

    # 3. modified keys still reach the notebook: Shift+Enter runs the cell and moves on
    page.locator(".rw-heatmap-scroll").first.focus()
    page.keyboard.press("Shift+Enter")
    _wait(lambda: page.evaluate(ACTIVE_CELL) == 1, what=f"Shift+Enter to reach the notebook ({app})")


@pytest.mark.parametrize("app", ["jupyterlab", "notebook7"])
def test_widget_owns_its_keys(app, request, chromium_browser):
    server = request.getfixturevalue("lab" if app == "jupyterlab" else "notebook7")
    OUT.mkdir(exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    path = "lab/tree/e2e.ipynb" if app == "jupyterlab" else "notebooks/e2e.ipynb"
    _run_first_cell(page, f"{server['url']}/{path}?token={server['token']}", f"keys-{app}")
    kernel = Kernel(server)
    try:
        _keys_work(page, kernel, app)
    finally:
        kernel.close()
        context.close()
