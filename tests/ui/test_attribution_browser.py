"""Attribution in JupyterLab 4 (Debian's Chromium): a click on a lens cell fills the ``AttributionPanel`` under the
``ResidWidget``; its bars are painted in the order of the kernel's numbers; the panel and the ``AttributionExplorer``
have no geometry defects (the measure of ``test_explorer_geometry.py``: overlapping or clipped labels, legends over marks,
horizontal scrolling, low contrast) at ~950 px in the light and the dark theme. Screenshots: ``test-output/attribution/``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ROOT
from test_explorer_geometry import MEASURE_JS, _set_theme
from test_jupyterlab import lab  # noqa: F401  (the JupyterLab server fixture, reused)
from labnb import open_in_lab, write_notebook

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "attribution"
NOTEBOOK = "attribution.ipynb"
PROMPT = "Mr. and Mrs."
CELLS = [
    "from resid_widgets import AttributionExplorer, AttributionPanel, ResidWidget, Session\nsession = Session()",
    'ax = AttributionExplorer(session, ["It was a fine morning.", "She said nothing more.", "Mr. Darcy bowed."], " The", " the")\nax',
    f'w = ResidWidget(session, "{PROMPT}", targets=[" Bennet", " Darcy"])\npanel = AttributionPanel(w, top_k=8)\ndisplay(w, panel)',
]


def _open(lab, page) -> None:  # noqa: F811
    write_notebook(lab["root"] / NOTEBOOK, CELLS)
    open_in_lab(lab, page, NOTEBOOK)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    for _ in CELLS:
        page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=240_000)
    explorer = page.locator(".jp-Notebook .jp-Cell").nth(1)
    page.wait_for_function(
        "el => [...el.querySelectorAll('.bqplot.figure svg.svg-figure')].filter(s => s.getBoundingClientRect().width > 0).length >= 5",
        arg=explorer.element_handle(), timeout=240_000,
    )


def _expected_order(row: int, pos: int) -> list[str]:
    """The panel's top writers computed here, in the test's own process, from the same demo model."""
    from resid_widgets import AttributionRun, Session

    att = AttributionRun(Session(device="cpu"), PROMPT).dla(" Bennet", " Darcy", row=row)
    col = att.values[:, pos]
    order = np.argsort(-np.abs(col), kind="stable")[:8]
    return [att.labels[i] for i in order[np.argsort(-col[order], kind="stable")]]


def test_click_fills_the_panel_and_nothing_overlaps(lab, chromium_browser):  # noqa: F811
    OUT.mkdir(parents=True, exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1800})
    page = context.new_page()
    results: dict = {}
    try:
        _open(lab, page)
        cell = page.locator(".jp-Notebook .jp-Cell").nth(2)
        canvas = cell.locator(".rw-heatmap-canvas")
        rows, cols = int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))
        cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
        row, pos = rows - 1, cols - 1
        cell.locator(".rw-heatmap-overlay").click(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})
        page.wait_for_function(
            "([el, t]) => el.innerText.includes(t)", arg=[cell.element_handle(), f"Row {row}, position {pos}"], timeout=60_000
        )
        page.wait_for_timeout(1500)
        writers = cell.locator(".bqplot.figure").first  # the panel's first figure: the top writers
        ticks = writers.evaluate(
            """fig => [...fig.querySelectorAll('g.axis')].map(a => [...a.querySelectorAll('.tick text')].map(t => t.textContent))"""
        )
        assert _expected_order(row, pos) in ticks, ticks  # the bars' labels, in the kernel's sorted order
        count = "fig => [...fig.querySelectorAll('rect.bar')].filter(r => r.getBoundingClientRect().height > 0.5).length"
        try:  # the bars are painted (each of the 8 writers has a bar of some height)
            page.wait_for_function(f"fig => ({count})(fig) >= 8", arg=writers.element_handle(), timeout=30_000)
        except Exception:
            cell.screenshot(path=str(OUT / "unpainted.png"))
            raise AssertionError(f"{writers.evaluate(count)} bars painted")
        for theme in ("light", "dark"):
            _set_theme(page, theme)
            page.mouse.move(0, 0)
            for name, i in (("explorer", 1), ("panel", 2)):
                out = page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea")
                for block in ("end", "start"):
                    out.evaluate(f"e => e.scrollIntoView({{block: '{block}'}})")
                    page.wait_for_timeout(700)
                got = out.evaluate(MEASURE_JS)
                assert got["stats"]["figures"] >= 3 and got["stats"]["marks"] > 0, (name, got["stats"])
                results[f"{name}-{theme}"] = got
                out.screenshot(path=str(OUT / f"{name}-{theme}.png"))
    finally:
        (OUT / "defects.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        context.close()
    bad = {k: r["defects"][:8] for k, r in results.items() if r["defects"]}
    assert not bad, json.dumps(bad, indent=1, ensure_ascii=False)
