"""Issue 19 items 1 and 11 in JupyterLab 4, as drawn: every explorer's residual-row axis reads like the
heatmap's rows (``embed, 0, 1, 2, 3``), TaskVectorExplorer's PCA ticks do not run together at row 0, and
LogitDiffExplorer's ranking caption is one line when the output has room.

Screenshots: ``test-output/labels-*.png``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import ROOT
from test_jupyterlab import Kernel, _wait, lab  # noqa: F401  (the JupyterLab server fixture, reused)

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output"
NOTEBOOK = "labels.ipynb"
CELLS = [
    "from resid_widgets import Session, ProjectionExplorer, LogitDiffExplorer, TaskVectorExplorer, LensKLExplorer, CompareWidget\n"
    "session = Session()",
    'pe = ProjectionExplorer(session, ["The capital of France is", "If 5x + 3 = 18, then x equals"])\npe',
    'ld = LogitDiffExplorer(session, "This is a sentence.", answers=" It", counterfactuals=" it", top_k=5)\nld',
    'tv = TaskVectorExplorer(session, [f"Answer minimally: Given the numbers 25 and 9 calculate the {t}" for t in '
    '["minimum", "maximum", "sum", "difference", "product"]], ["minimum", "maximum", "sum", "difference", "product"], row=0)\ntv',
    'lx = LensKLExplorer(session, ["Mr. and Mrs. Bennet had five daughters."])\nlx',
    'cw = CompareWidget(session, "Mr. and Mrs.", "It was a fine morning.")\ncw',
]
#: (cell, the number of row axes it shows)
ROW_AXES = {1: 2, 2: 2, 3: 1, 4: 2, 5: 3}

ROW_TICKS = """(root, title) => {
  const out = [];
  for (const label of root.querySelectorAll('svg text.axislabel')) {
    if (label.textContent.trim() !== title || !label.getClientRects().length) continue;
    const axis = label.closest('g.axis');
    out.push([...axis.querySelectorAll('.tick text')].filter(t => t.getClientRects().length).map(t => t.textContent));
  }
  return out;
}"""

PCA_OVERLAP = """(root) => {
  // the visible PCA figure's x-axis tick labels: the overlap of neighbours, in px
  const figs = [...root.querySelectorAll('.bqplot.figure')].filter(f => f.getClientRects().length && f.getBoundingClientRect().width > 0);
  const pca = figs.find(f => [...f.querySelectorAll('text.axislabel')].some(t => t.textContent.startsWith('PC1')));
  const label = [...pca.querySelectorAll('text.axislabel')].find(t => t.textContent.startsWith('PC1'));
  const ticks = [...label.closest('g.axis').querySelectorAll('.tick text')].filter(t => t.textContent)
      .map(t => t.getBoundingClientRect()).sort((a, b) => a.left - b.left);
  let worst = -1e9;
  for (let i = 1; i < ticks.length; i++) worst = Math.max(worst, ticks[i - 1].right - ticks[i].left);
  return {n: ticks.length, worst};
}"""


def _open(server, page) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, server["root"] / NOTEBOOK)
    tracker = server["root"].parent / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    req = urllib.request.Request(
        f"{server['url']}/api/sessions?token={server['token']}",
        data=json.dumps({"path": NOTEBOOK, "type": "notebook", "name": NOTEBOOK, "kernel": {"name": "python3"}}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(req, timeout=60).close()
    page.goto(f"{server['url']}/lab/tree/{NOTEBOOK}?token={server['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-NotebookKernelStatus", timeout=60_000)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    for _ in CELLS:
        page.keyboard.press("Shift+Enter")
    for i in ROW_AXES:
        cell = page.locator(".jp-Notebook .jp-Cell").nth(i)
        page.wait_for_function(
            "el => [...el.querySelectorAll('.bqplot.figure svg.svg-figure')].filter(s => s.getBoundingClientRect().width > 0).length >= 2",
            arg=cell.element_handle(), timeout=240_000,
        )
    page.wait_for_timeout(1500)


def test_row_axes_pca_ticks_and_ranking_caption(lab, chromium_browser):  # noqa: F811
    OUT.mkdir(exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    try:
        _open(lab, page)
        from resid_widgets.analyses.rows import ROW_AXIS

        seen = {}
        for i in ROW_AXES:  # as a reader scrolls to each (bqplot lays a figure out once it is on screen)
            out = page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea-output").first
            out.evaluate("e => e.scrollIntoView({block: 'center'})")
            page.wait_for_timeout(600)
            out.screenshot(path=str(OUT / f"labels-{i}.png"))
            seen[i] = out.evaluate(ROW_TICKS, ROW_AXIS)
        for i, n_axes in ROW_AXES.items():
            assert len(seen[i]) >= n_axes, (CELLS[i].splitlines()[0], seen[i])
            for ticks in seen[i]:
                assert ticks == ["embed", "0", "1", "2", "3"], (CELLS[i].splitlines()[0], ticks)

        # TaskVectorExplorer at row 0 (the embeddings): PCA ticks apart
        tv = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output").first
        pca = tv.evaluate(PCA_OVERLAP)
        assert pca["n"] >= 3 and pca["worst"] < -2, pca

        # LogitDiffExplorer: the ranking's caption is one line in a wide output
        ld = page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-OutputArea-output").first
        cap = ld.locator(".rw-table-caption")
        lines = cap.evaluate("e => e.getBoundingClientRect().height / parseFloat(getComputedStyle(e).lineHeight || 16)")
        assert lines < 1.6, f"the ranking caption takes {lines:.1f} lines"
    finally:
        context.close()
