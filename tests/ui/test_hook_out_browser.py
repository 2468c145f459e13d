"""A session whose driver captures only ``blocks.{l}.hook_out`` (vLLM's stock overlay), in Chromium: the metric
menu greys the attention-out / MLP-out norms with the backend's reason, the tooltip has no line for them, a
view asked to show one shows the default metric instead, and every other metric draws as usual. On the
fake-model page, then in real JupyterLab (light and dark theme) and Notebook 7 with a kernel."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT
from labnb import open_in_lab, run_first_cell, write_notebook
from test_explorer_geometry import _set_theme
from test_frontend import base_state, cell_xy, open_widget
from test_jupyterlab import lab, notebook7  # noqa: F401  (the servers, reused)

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "hook_out"


@pytest.fixture(scope="module")
def hook_out_widget():
    sys.path.insert(0, str(ROOT / "tests"))
    from drivers import remote_bridge

    from resid_widgets import ResidWidget, Session
    from resid_widgets.session.loading import DEMO_MODEL_DIR

    w = ResidWidget(Session(remote_bridge(DEMO_MODEL_DIR, hooks="hook_out")[0]), "Mr. and Mrs. Bennet had five daughters.")
    yield w
    w.close()


def test_unavailable_metrics_are_greyed_with_the_reason(chromium_browser, frontend_bundle, hook_out_widget):
    from resid_widgets.payload.protocol import METRIC_SPECS

    w = hook_out_widget
    lacking = [m for m, s in METRIC_SPECS.items() if s["needs"] == "sublayers"]
    why = w.session.lacks["sublayers"]
    page = open_widget(chromium_browser, frontend_bundle, meta=w._meta, blob=w._payload,
                       state=base_state(metric=lacking[0], targets=[], prompt=w.prompt, top_k=w.top_k, layer=2))
    try:
        options = page.eval_on_selector_all(".rw-metric option", "os => os.map(o => [o.value, o.disabled, o.textContent, o.title])")
        by_name = {o[0]: o[1:] for o in options}
        for m in lacking:
            disabled, text, title = by_name[m]
            assert disabled and text == f"{METRIC_SPECS[m]['label']} (unavailable)" and title == why, by_name[m]
        assert not any(by_name[m][0] or by_name[m][2] for m in ("resid_norm", "kl", "projection")), by_name
        # the chosen metric is unavailable: the view shows the default, and the legend says which
        shown = page.eval_on_selector(".rw-metric", "s => s.value")
        assert shown not in lacking and page.get_attribute(".rw-legend", "data-metric") == shown
        # tooltip of a layer row: no line for the lacking metrics, the residual norm is there
        x, y = cell_xy(page, 2, 3)
        page.mouse.move(x, y)
        page.wait_for_selector(".rw-tooltip:not([hidden])")
        labels = page.eval_on_selector_all(".rw-tooltip .rw-tip-kv tr", "trs => trs.map(t => t.cells[0].textContent)")
        assert "‖resid‖" in labels and not {METRIC_SPECS[m]["tooltip_label"] for m in lacking} & set(labels), labels
        OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(OUT / "menu-tooltip.png"), full_page=True)
        # the menu can still switch among the available metrics
        page.select_option(".rw-metric", "resid_norm")
        assert page.get_attribute(".rw-legend", "data-metric") == "resid_norm"
        assert page.page_errors == []  # type: ignore[attr-defined]
    finally:
        page.close()



def test_remote_stage_shows_in_the_status(chromium_browser, frontend_bundle):
    """The ``stage`` trait (queued on NDIF, running, reading out) is the status text while Python computes."""
    page = open_widget(chromium_browser, frontend_bundle)
    try:
        text = lambda: page.eval_on_selector(".rw-status", "e => e.hidden ? null : e.innerText.trim()")  # noqa: E731
        assert text() is None
        page.evaluate("() => { py.set('status', 'computing'); py.set('progress', 0); py.set('stage', 'queued'); }")
        assert text() == "queued…"
        page.evaluate("() => { py.set('stage', 'reading out'); py.set('progress', 0.4); }")
        assert text() == "reading out… 40%"
        OUT.mkdir(parents=True, exist_ok=True)
        page.locator(".rw-header").screenshot(path=str(OUT / "stage.png"))
        page.evaluate("() => { py.set('stage', ''); }")
        assert text() == "computing… 40%"
        page.evaluate("() => { py.set('status', 'idle'); }")
        assert text() is None and page.page_errors == []  # type: ignore[attr-defined]
    finally:
        page.close()

NOTEBOOK = "hook_out.ipynb"
CELL = (
    f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "from drivers import remote_bridge\n"
    "from resid_widgets import ResidWidget, Session\n"
    "from resid_widgets.session.loading import DEMO_MODEL_DIR\n"
    "w = ResidWidget(Session(remote_bridge(DEMO_MODEL_DIR, hooks='hook_out')[0]), 'Mr. and Mrs. Bennet had five daughters.')\n"
    "w"
)
MENU_JS = "s => [...s.options].filter(o => o.disabled && o.title).map(o => [o.value, o.textContent, o.title])"


def _check_in_notebook(page, tag: str) -> None:
    run_first_cell(page, ".rw-heatmap-canvas[data-cols]")
    greyed = page.eval_on_selector(".rw-metric", MENU_JS)
    assert [g[0] for g in greyed] == ["attn_norm", "mlp_norm"], greyed
    assert all(g[1].endswith("(unavailable)") and "driver (hook_out only) backend captures only" in g[2] for g in greyed), greyed
    canvas = page.locator(".rw-heatmap-canvas")
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    page.locator(".rw-heatmap-overlay").hover(position={"x": 3 * cw + cw / 2, "y": 2 * rh + rh / 2})
    page.wait_for_selector(".rw-tooltip:not([hidden])")
    labels = page.eval_on_selector_all(".rw-tooltip .rw-tip-kv tr", "trs => trs.map(t => t.cells[0].textContent)")
    assert "‖resid‖" in labels and "‖attn out‖" not in labels and "‖MLP out‖" not in labels, labels
    # steering and attribution: refused by this backend, said before anyone asks
    toggle = page.locator(".rw-steer-toggle")
    assert toggle.is_disabled() and "not available on the driver (hook_out only) backend" in toggle.get_attribute("title")
    page.locator(".rw-heatmap-overlay").click(position={"x": 3 * cw + cw / 2, "y": 2 * rh + rh / 2})  # pin: the Writers panel
    page.wait_for_selector(".rw-writers[data-state='error']")
    text = page.locator(".rw-writers-error").inner_text()
    assert "attribution is not available on the driver (hook_out only) backend" in text, text
    page.keyboard.press("Escape")
    page.locator(".rw-metric").select_option("resid_norm")
    page.wait_for_function("() => document.querySelector('.rw-legend').dataset.metric === 'resid_norm'")
    page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea").screenshot(path=str(OUT / f"{tag}.png"))


def test_greyed_metrics_in_jupyterlab_light_and_dark(lab, chromium_browser):  # noqa: F811
    OUT.mkdir(parents=True, exist_ok=True)
    write_notebook(lab["root"] / NOTEBOOK, [CELL])
    context = chromium_browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    try:
        open_in_lab(lab, page, NOTEBOOK)
        _check_in_notebook(page, "jupyterlab-light")
        _set_theme(page, "dark")
        page.locator(".jp-Notebook .jp-Cell").first.locator(".jp-OutputArea").screenshot(path=str(OUT / "jupyterlab-dark.png"))
        colour = page.eval_on_selector(".rw-metric option[value='attn_norm']", "o => getComputedStyle(o.parentElement).color")
        assert colour != "rgb(0, 0, 0)", colour  # the menu's text follows the dark theme
        _set_theme(page, "light")
    finally:
        context.close()


def test_greyed_metrics_in_notebook7(notebook7, chromium_browser):  # noqa: F811
    OUT.mkdir(parents=True, exist_ok=True)
    write_notebook(notebook7["root"] / NOTEBOOK, [CELL])
    context = chromium_browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    try:
        open_in_lab(notebook7, page, NOTEBOOK, app="notebooks")
        _check_in_notebook(page, "notebook7")
    finally:
        context.close()
