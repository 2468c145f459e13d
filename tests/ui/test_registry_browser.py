"""A metric added through the registry alone (one entry + its array computation, registered at test
time, no frontend rebuild) appears in the metric menu, the legend, the tooltip and the heatmap's
colours in Chromium, in the live widget and in the static HTML export."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from resid_widgets import ResidWidget
from resid_widgets.payload.protocol import register_metric, unregister_metric
from conftest import ROOT
from test_frontend import base_state, cell_rgb, cell_xy, open_widget

if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
from toy_metric import TOY, TOY_ARRAY  # noqa: E402  (the same metric as tests/test_contract.py)

pytestmark = pytest.mark.ui


@pytest.fixture
def toy_widget(demo_session):
    register_metric(TOY, array=TOY_ARRAY, compute=lambda a, p, ctx: a.top_probs[:, p, 0] / 2)
    w = ResidWidget(demo_session, "Mr. and Mrs.", metric="toy_half_prob")
    try:
        yield w
    finally:
        w.close()
        unregister_metric(TOY["name"])


def _check_page(page, w: ResidWidget) -> None:
    a = w.analysis
    # menu: the option is there, labelled from the entry, and chosen
    assert page.eval_on_selector(".rw-metric", "s => s.value") == "toy_half_prob"
    assert page.eval_on_selector(".rw-metric", "s => s.selectedOptions[0].textContent") == "toy: half top-1"
    # legend: the entry's title (template filled), its unit once, its ticks
    assert page.get_attribute(".rw-legend", "data-metric") == "toy_half_prob"
    assert page.text_content(".rw-legend-title") == "half the top-1 probability (logit lens) [half-probability]"
    assert page.eval_on_selector_all(".rw-legend-tick", "els => els.map(e => e.textContent)") == ["0", "0.25", "0.5"]
    # heatmap: a cell with half-probability 0.5 (clipped) is the top of viridis, one near 0 the bottom
    row, pos = a.n_rows - 1, a.n_tokens - 1
    v = float(a.top_probs[row, pos, 0] / 2)
    # tooltip: the entry's line, its value and the top-1 token chip
    x, y = cell_xy(page, row, pos)
    page.mouse.move(x, y)
    page.wait_for_selector(".rw-tooltip:not([hidden])")
    rows = page.eval_on_selector_all(".rw-tooltip .rw-tip-kv tr", "trs => trs.map(t => [t.cells[0].textContent, t.cells[1].textContent])")
    toy = [r for r in rows if r[0] == "toy half"]
    assert len(toy) == 1, rows
    shown = float(toy[0][1].split(" ")[0])
    assert abs(shown - v) <= 2e-3 * max(1.0, v), (toy, v)
    assert toy[0][1].endswith(f"(half of {a.strings[int(a.top_ids[row, pos, 0])].replace(' ', '␣')})"), toy
    rgb = cell_rgb(page, row, pos)
    viridis_top, viridis_bottom = np.array([253, 231, 37]), np.array([68, 1, 84])
    t = min(1.0, v / 0.5)
    expected = viridis_bottom + t * (viridis_top - viridis_bottom)
    assert np.abs(np.array(rgb[:3]) - expected).max() <= 90, (rgb, expected)  # viridis is not linear: a loose band


def test_toy_metric_in_the_live_widget(chromium_browser, frontend_bundle, toy_widget):
    w = toy_widget
    page = open_widget(
        chromium_browser, frontend_bundle, state=base_state(metric="toy_half_prob", targets=[], prompt=w.prompt, top_k=w.top_k, layer=0),
        meta=w._meta, blob=w._payload,
    )
    try:
        _check_page(page, w)
        assert page.page_errors == []  # type: ignore[attr-defined]
    finally:
        page.close()


def test_toy_metric_in_the_static_export(chromium_browser, frontend_bundle, toy_widget, tmp_path):
    w = toy_widget
    path = w.save_html(tmp_path / "toy.html")
    page = chromium_browser.new_page(viewport={"width": 1000, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(path.as_uri())
        page.wait_for_selector("#rw-app[data-ready='1']", timeout=5000)
        _check_page(page, w)
        assert errors == []
    finally:
        page.close()


def test_target_metric_comes_back_with_the_targets(chromium_browser, frontend_bundle, demo_session):
    """Issue 19 item 8: the chosen target metric falls back to the default (a probability) while the
    payload has no targets, and returns when targets are added again; the trait is never rewritten."""
    import base64

    from resid_widgets.payload.encode import encode_analysis

    with_t = encode_analysis(demo_session.analyze("Mr. and Mrs.", targets=[" Bennet", " and"]), seq=1)
    without = encode_analysis(demo_session.analyze("Mr. and Mrs."), seq=2)
    again = encode_analysis(demo_session.analyze("Mr. and Mrs.", targets=[" Bennet", " and"]), seq=3)
    page = open_widget(chromium_browser, frontend_bundle, state=base_state(metric="target_rank", prompt="Mr. and Mrs."), meta=with_t[0], blob=with_t[1])
    try:
        assert page.get_attribute(".rw-legend", "data-metric") == "target_rank"
        for (meta, blob), shown in ((without, "top1_prob"), (again, "target_rank")):
            page.evaluate("([m, b]) => window.py.setPayload(m, b)", [meta, base64.b64encode(blob).decode()])
            page.wait_for_function(f"document.querySelector('.rw-legend').dataset.metric === '{shown}'", timeout=3000)
            assert page.eval_on_selector(".rw-metric", "s => s.value") == shown
        assert ["metric", "top1_prob"] not in page.evaluate("window.log.sets")  # the choice was kept
    finally:
        page.close()


def test_top_k_is_sent_as_typed_and_the_error_shows(chromium_browser, frontend_bundle, demo_session):
    """Issue 19 item 2: 101, 0 and 1.9 typed into top-k reach Python as typed (no silent clamping or
    rounding); Python's contract answers with the error (banner) and edit_done (indicator gone)."""
    from resid_widgets.payload.contract import ContractError, check

    page = open_widget(chromium_browser, frontend_bundle, state=base_state(top_k=5))
    try:
        view = page.get_attribute(".rw-root", "data-view")
        for n, typed in enumerate(["101", "0", "1.9"], 1):
            page.fill(".rw-topk-input", typed)
            page.wait_for_function(f"window.log.sends.filter(m => m.type === 'edit').length === {n}", timeout=3000)
            edit = [m for m in page.evaluate("window.log.sends") if m["type"] == "edit"][-1]
            assert edit["changes"] == {"top_k": float(typed)}, edit
            try:
                check("top_k", edit["changes"]["top_k"])
            except ContractError as exc:
                message = str(exc)
            page.evaluate(
                "([v, s, e]) => { window.py.set('error', e); window.py.reply({type: 'edit_done', view: v, seq: s, error: e}); }",
                [view, edit["seq"], message],
            )
            page.wait_for_selector(".rw-status", state="hidden")
            assert page.text_content(".rw-error-text") == message and "top_k" in message
    finally:
        page.close()
