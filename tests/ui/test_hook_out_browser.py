"""A session whose driver captures only ``blocks.{l}.hook_out`` (vLLM's stock overlay), in Chromium: the metric
menu greys the attention-out / MLP-out norms with the backend's reason, the tooltip has no line for them, a
view asked to show one shows the default metric instead, and every other metric draws as usual."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT
from test_frontend import base_state, cell_xy, open_widget

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


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_unavailable_metrics_are_greyed_with_the_reason(chromium_browser, frontend_bundle, hook_out_widget, theme):
    from resid_widgets.payload.protocol import METRIC_SPECS

    w = hook_out_widget
    lacking = [m for m, s in METRIC_SPECS.items() if s["needs"] == "sublayers"]
    why = w.session.lacks["sublayers"]
    page = open_widget(chromium_browser, frontend_bundle, meta=w._meta, blob=w._payload,
                       state=base_state(metric=lacking[0], targets=[], prompt=w.prompt, top_k=w.top_k, layer=2))
    try:
        if theme == "dark":  # --jp-* variables as JupyterLab's dark theme sets them
            page.evaluate("""() => { const s = document.body.style; s.background = '#111';
                s.setProperty('--jp-layout-color0', '#111'); s.setProperty('--jp-ui-font-color1', '#eee');
                s.setProperty('--jp-content-font-color1', '#eee'); s.setProperty('--jp-border-color2', '#444'); }""")
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
        page.screenshot(path=str(OUT / f"menu-tooltip-{theme}.png"), full_page=True)
        # the menu can still switch among the available metrics
        page.select_option(".rw-metric", "resid_norm")
        assert page.get_attribute(".rw-legend", "data-metric") == "resid_norm"
        assert page.page_errors == []  # type: ignore[attr-defined]
    finally:
        page.close()
