"""ResidWidget's steering panel in a real browser: JupyterLab 4 and Notebook 7 (Debian's Chromium), the demo model.

* The panel's controls, used as a person does (the "Steer" toggle, typing the token and the layers, the α slider by
  keys, the on/off checkbox, the continuation length), reach the kernel as one edit: ``w.steer`` and the after
  payload follow.
* before | after | difference are each painted (the heatmap canvas' pixels at every cell): after differs from
  before in rows at and after the steered layer's output and not in the rows before it; the difference is one
  colour (Δ = 0) there and several after it; moving α repaints only those rows.
* The tooltip shows the metric before, after and Δ at the cell, equal to the kernel's two analyses; in after and
  difference mode its full top-k list is the steered run's (the kernel's ``w.steered``; the pinned cell's panel too),
  before's the plain run's.
* α typed beyond the contract's ±10,000: the banner names the limits, nothing shown is lost; typed beyond the slider's
  ±20 but inside the limit: it runs. The after run streams (slow lens blocks): "after: computing… n %" and the stream
  painted as it arrives; the last after view shown while one computes is dimmed and said stale.
* The continuations are the kernel's strings as text: markup in one (``<b>x</b>``) shows literally, no element made.
* Geometry: every control inside the widget's box, no two panel controls overlapping; the dark theme's panel text
  readable (contrast ≥ 4.5); the exported page's switch works offline (JupyterLab run only).

Screenshots: ``test-output/steer_panel/``.
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from conftest import ROOT
from test_explorer_geometry import _set_theme
from test_interventions_browser import INSIDE_JS, NotebookKernel
from test_jupyterlab import _server, _wait
from labnb import write_notebook

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "steer_panel"
NOTEBOOK = "steer.ipynb"
PROMPT = "Mr. Darcy said to Elizabeth that she"
CELLS = [
    f"from resid_widgets import ResidWidget\nw = ResidWidget(prompt={PROMPT!r}, targets=[' Bennet'], device='cpu')\nw",
    # TaskVectorExplorer writes the cosines on its heatmap cells: the pointer must still reach the cell (its tooltip)
    "from resid_widgets import TaskVectorExplorer\n"
    "tv = TaskVectorExplorer(w.session, ['Mr. and Mrs.', 'Miss Elizabeth', 'Mr. Darcy', 'Miss Bingley'], ['a', 'b', 'a', 'b'])\ntv",
]
FIRST = 2  # steering layer 1 changes residual rows 2.. (row l + 1 is block l's output)

#: the painted colour at every cell of the heatmap canvas (a corner pixel, off the cell's token text): [R][T]
CELLS_JS = """c => { const s = c.width / parseFloat(c.style.width); const cw = +c.dataset.cellWidth, rh = +c.dataset.rowHeight;
  const ctx = c.getContext('2d'); const out = [];
  for (let r = 0; r < +c.dataset.rows; r++) { const row = [];
    for (let p = 0; p < +c.dataset.cols; p++) {
      const d = ctx.getImageData(Math.floor((p * cw + 3) * s), Math.floor((r * rh + 3) * s), 1, 1).data;
      row.push(`${d[0]},${d[1]},${d[2]},${d[3]}`); }
    out.push(row); } return out; }"""

#: visible controls of the steering panel and the switch that overlap one another (by more than 1 px)
OVERLAP_JS = """root => { const els = [...root.querySelectorAll('.rw-steer input, .rw-steer select, .rw-steer button, .rw-steer output, '
  + '.rw-steer code, .rw-steer-text, .rw-steer .rw-label, .rw-steer-switch button, .rw-toolbar button')]
  .filter(e => e.getClientRects().length && e.getBoundingClientRect().width > 0);
  const out = []; const rs = els.map(e => e.getBoundingClientRect());
  for (let i = 0; i < els.length; i++) for (let j = i + 1; j < els.length; j++) {
    if (els[i].contains(els[j]) || els[j].contains(els[i])) continue;
    const a = rs[i], b = rs[j]; const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 1 && h > 1) out.push(`${els[i].className} × ${els[j].className}`); }
  return out; }"""

#: the contrast ratio of the panel's text against the background it is drawn on (the first opaque ancestor)
CONTRAST_JS = """root => { const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bg = e => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c; } return [255, 255, 255]; };
  return [...root.querySelectorAll('.rw-steer .rw-label, .rw-steer-text, .rw-steer-formula, .rw-steer-mode, .rw-steer select')]
    .filter(e => e.getClientRects().length).map(e => { const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
      return [e.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)]; }); }"""


@pytest.fixture(scope="module", params=["jupyterlab", "notebook"])
def app(request, tmp_path_factory, frontend_bundle):
    for server in _server(request.param, tmp_path_factory):
        yield {**server, "app": request.param}


def _exec(kernel, code: str) -> None:
    reply = kernel.client.execute_interactive(code, timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]


def _open(app, page) -> None:
    write_notebook(app["root"] / NOTEBOOK, CELLS)
    req = urllib.request.Request(
        f"{app['url']}/api/sessions?token={app['token']}",
        data=json.dumps({"path": NOTEBOOK, "type": "notebook", "name": NOTEBOOK, "kernel": {"name": "python3"}}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    urllib.request.urlopen(req, timeout=60).close()
    where = "lab/tree" if app["app"] == "jupyterlab" else "notebooks"
    page.goto(f"{app['url']}/{where}/{NOTEBOOK}?token={app['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-NotebookKernelStatus", timeout=60_000)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    for _ in CELLS:
        page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=120_000)
        page.wait_for_selector(".jp-Cell:nth-child(2) rect.heatmapcell", timeout=120_000)
    except Exception:
        page.screenshot(path=str(OUT / f"{app['app']}-failed.png"), full_page=True)
        raise
    page.wait_for_timeout(500)


def _cells(root) -> list[list[str]]:
    return root.locator(".rw-heatmap-canvas").evaluate(CELLS_JS)


def _mode(root, mode: str) -> list[list[str]]:
    root.locator(f".rw-steer-mode-{mode}").click()
    root.page.wait_for_function("([el, m]) => el.dataset.steer === m", arg=[root.element_handle(), mode], timeout=10_000)
    root.page.wait_for_timeout(200)
    return _cells(root)


def _steer_by_hand(root, kernel) -> None:
    """The panel's controls as a person uses them; one edit reaches the kernel."""
    root.locator(".rw-steer-toggle").click()
    assert root.locator(".rw-steer").is_visible()
    root.locator(".rw-steer-token").fill(" Bennet")
    root.locator(".rw-steer-layers").fill("1")
    root.locator(".rw-steer-n").fill("6")
    alpha = root.locator(".rw-steer-alpha")
    alpha.focus()
    alpha.press("End")  # the slider's maximum
    root.locator(".rw-steer-on").check()
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('alpha')") == 20.0, timeout=90, what="the steered run at α = 20")
    assert kernel.eval("[w.steer['token'], w.steer['layers'], w.steer['n_continue'], w.steer['on']]") == [" Bennet", [1], 6, True]
    root.page.wait_for_function("el => el.dataset.steer === 'after'", arg=root.element_handle(), timeout=30_000)


def _modes(root, kernel) -> None:
    before, after, diff = (_mode(root, m) for m in ("before", "after", "difference"))
    for name, px in (("before", before), ("after", after), ("difference", diff)):
        assert len({c for row in px for c in row}) > 3, (name, px)  # painted, several colours
        assert all(c.endswith(",255") for row in px for c in row), name
    assert after[:FIRST] == before[:FIRST], "rows before the steered layer's output changed"
    assert after[FIRST:] != before[FIRST:], "the steered rows did not change"
    assert len({c for row in diff[:FIRST] for c in row}) == 1  # Δ = 0: the scale's middle, one colour
    assert len({c for row in diff[FIRST:] for c in row}) > 1
    # α moved by keys (Home: the minimum): only the steered rows repaint
    _mode(root, "after")
    root.locator(".rw-steer-alpha").press("Home")
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('alpha')") == -20.0, timeout=90, what="the run at α = -20")
    root.page.wait_for_timeout(500)
    moved = _cells(root)
    assert moved[:FIRST] == before[:FIRST] and moved[FIRST:] != after[FIRST:]


def _click_cell(root, row: int, pos: int) -> None:
    canvas = root.locator(".rw-heatmap-canvas")
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    root.locator(".rw-heatmap-overlay").click(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})


def _pinned(root, kernel) -> None:
    """Positions "the pinned position": the pinned cell's position is steered, and follows the pin."""
    _click_cell(root, 1, 4)
    _wait(lambda: kernel.eval("w.selected") == [1, 4], what="the pinned cell in the kernel")
    root.locator(".rw-steer-positions").select_option("at")
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('positions')") == [4], timeout=90, what="steering at position 4")
    before, after = _mode(root, "before"), _mode(root, "after")
    assert [row[:4] for row in after] == [row[:4] for row in before], "positions before the steered one changed"
    assert [row[4:] for row in after[FIRST:]] != [row[4:] for row in before[FIRST:]]
    _click_cell(root, 1, 6)
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('positions')") == [6], timeout=90, what="the steer to follow the pin")
    root.locator(".rw-steer-positions").select_option("all")
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('positions')") is None, timeout=90, what="all positions again")
    _click_cell(root, 1, 6)  # unpin


def _tooltip(root, kernel, name: str) -> None:
    T = kernel.eval("w.analysis.n_tokens")
    row, pos = 3, T - 1
    canvas = root.locator(".rw-heatmap-canvas")
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    root.locator(".rw-heatmap-overlay").hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})
    tip = root.locator(".rw-tooltip .rw-steer-tip")
    tip.wait_for(state="visible", timeout=15_000)
    b, a = kernel.eval(f"[int(w.analysis.target_ranks[{row}, {pos}, 0]), int(w.steered.target_ranks[{row}, {pos}, 0])]")
    got = [float(tip.locator(f"tr.rw-steer-{k} td").inner_text().replace("+", "")) for k in ("before", "after", "delta")]
    for g, want in zip(got, (b, a, a - b)):
        assert abs(g - want) <= 0.005 * max(1, abs(want)), (got, b, a)
    root.screenshot(path=str(OUT / f"{name}-tooltip.png"))
    root.page.mouse.move(0, 0)


#: a token string as the tooltip shows it (text.ts `visible`)
VISIBLE = "(lambda s: s.replace(' ', '\u2423').replace('\\n', '\u21b5').replace('\\t', '\u21e5') or '\u2205')"


def _hover(root, row: int, pos: int) -> None:
    root.page.mouse.move(0, 0)
    canvas = root.locator(".rw-heatmap-canvas")
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    root.locator(".rw-heatmap-overlay").hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})


def _after_topk(root, kernel, name: str) -> None:
    """after / difference: the tooltip's full top-k list is the steered run's (the kernel's ``w.steered``), different
    from before's where steering changed the prediction; before: the plain run's."""
    row, pos = kernel.eval("next([r, p] for r in range(w.analysis.n_rows - 1, 1, -1) for p in range(w.analysis.n_tokens - 1, -1, -1) "
                           "if w.steered.top_ids[r, p, 0] != w.analysis.top_ids[r, p, 0])")
    want = {run: kernel.eval(f"[{VISIBLE}(w.{run}.strings[int(i)]) for i in w.{run}.top_ids[{row}, {pos}]]")
            for run in ("steered", "analysis")}
    got, notes = {}, {}
    for mode in ("before", "after", "difference"):
        _mode(root, mode)
        _hover(root, row, pos)
        root.locator(".rw-tooltip .rw-topk-list").wait_for(state="visible", timeout=15_000)
        got[mode] = root.locator(".rw-tooltip .rw-topk-tok").all_text_contents()
        notes[mode] = root.locator(".rw-tooltip .rw-topk-run").all_text_contents()
        if mode == "after":
            root.screenshot(path=str(OUT / f"{name}-after-topk.png"))
    # the pinned cell's panel describes the run shown too
    _click_cell(root, row, pos)
    root.locator(".rw-pinned .rw-topk-list").wait_for(state="visible", timeout=15_000)
    got["pinned"] = root.locator(".rw-pinned .rw-topk-tok").all_text_contents()
    _click_cell(root, row, pos)  # unpin
    root.page.mouse.move(0, 0)
    assert got["pinned"] == want["steered"], got["pinned"]
    assert got["before"] == want["analysis"] and got["after"] == want["steered"] == got["difference"], (got, want)
    assert got["after"] != got["before"]
    assert notes["before"] == [] and "steered run" in notes["after"][0] and "not a difference" in notes["difference"][0]


def _typed_alpha(root, kernel) -> None:
    """α typed beyond the contract's limit (protocol.json abs_max 10000): the banner names the limits, the kernel keeps
    its spec and the view its after payload; a typed α beyond the slider's ±20 but inside the limit runs."""
    keep = kernel.eval("w.steer['alpha']")
    typed = root.locator(".rw-steer-alpha-typed")
    assert typed.get_attribute("max") == "10000" and typed.get_attribute("min") == "-10000"
    typed.fill("20000")
    banner = root.locator(".rw-error")
    banner.wait_for(state="visible", timeout=30_000)
    assert "steer.alpha must be a finite number from -10000 to 10000, got 20000" in banner.inner_text()
    assert kernel.eval("w.steer['alpha']") == keep and root.evaluate("el => el.dataset.steer") != "none"
    root.screenshot(path=str(OUT / "typed-alpha-error.png"))
    typed.fill("35")
    _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('alpha')") == 35.0, timeout=90, what="the run at α = 35")
    _wait(lambda: not banner.is_visible(), what="the banner cleared")
    assert root.locator(".rw-steer-alpha").input_value() == "20"  # the slider at its end, the typed value ran


def _after_streams(root, kernel) -> None:
    """The after run streams: with slow lens blocks, the view says "after: computing… n %" and shows the after run as
    it streams (then the final one); the last after view shown meanwhile is marked stale."""
    _mode(root, "after")
    _exec(kernel, "from resid_widgets.analyses import pipeline as _pl\nimport time as _time\n_read = _pl.read_block\n"
                  "_pl.read_block = lambda *a, **k: (_time.sleep(0.7), _read(*a, **k))[1]\n"
                  "_chunk = w.session.chunk_elements\nw.session.chunk_elements = 2 * 4 * w.session.d_vocab")
    pending = root.locator(".rw-steer-pending")
    try:
        root.locator(".rw-steer-alpha-typed").fill("9")
        _wait(lambda: "shown as it streams" in (pending.text_content() or ""), timeout=60, what="the after run streaming")
        assert pending.is_visible() and "after: computing…" in pending.text_content()
        assert root.evaluate("el => el.dataset.steer") == "after" and not root.evaluate("el => el.classList.contains('rw-after-stale')")
        root.screenshot(path=str(OUT / "after-streaming.png"))
        _wait(lambda: kernel.eval("w._steer_meta.get('steer', {}).get('alpha')") == 9.0, timeout=90, what="the run at α = 9")
        _wait(lambda: not pending.is_visible(), what="the pending note gone")
    finally:
        _exec(kernel, "_pl.read_block = _read\nw.session.chunk_elements = _chunk")
    # while an after run is computing and the last one is shown: dimmed, said stale
    _exec(kernel, "w._steer_info = {**w._steer_info, 'computing': True, 'progress': 0.4}")
    _wait(lambda: "40 %" in (pending.text_content() or ""), what="the progress")
    assert "stale" in pending.text_content() and root.evaluate("el => el.classList.contains('rw-after-stale')")
    root.screenshot(path=str(OUT / "after-stale.png"))
    _exec(kernel, "w._steer_info = {k: v for k, v in w._steer_info.items() if k not in ('computing', 'progress')}")
    _wait(lambda: not pending.is_visible(), what="the note gone")
    assert not root.evaluate("el => el.classList.contains('rw-after-stale')")


def _texts(root, kernel) -> None:
    c = kernel.eval("w._steer_info['continuation']")
    assert c["n"] == 6 and c["before"] and c["after"]
    assert [root.locator(f".rw-steer-text-{k}").text_content() for k in ("before", "after")] == [c["before"], c["after"]]
    markup = {"n": 1, "before": "<b>x</b>", "after": "<img src=x onerror=alert(1)> & <i>y</i>"}
    _exec(kernel, f"w._steer_info = {{**w._steer_info, 'continuation': {markup!r}}}")
    _wait(lambda: root.locator(".rw-steer-text-before").text_content() == "<b>x</b>", what="the markup continuation")
    assert root.locator(".rw-steer-text-after").text_content() == markup["after"]
    assert root.locator(".rw-steer b, .rw-steer img, .rw-steer i, .rw-steer-text *").count() == 0


def _geometry(root, theme: str) -> None:
    assert root.evaluate(INSIDE_JS) == [], theme
    assert root.evaluate(OVERLAP_JS) == [], theme
    low = [(cls, round(r, 2)) for cls, r in root.evaluate(CONTRAST_JS) if r < 4.5]
    assert not low, (theme, low)


def _task_vector_hover(page) -> None:
    """The centre of a TaskVectorExplorer cell (where its cosine is written) is the cell for the pointer: hovering it
    shows the cell's tooltip."""
    out = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output").first
    out.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(500)
    cell = out.locator("rect.heatmapcell").filter(visible=True).nth(1)
    box = cell.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    hit = page.evaluate("([x, y]) => { const e = document.elementFromPoint(x, y); return e ? e.tagName.toLowerCase() + '.' + e.getAttribute('class') : ''; }", [cx, cy])
    texts = out.locator("text.label").filter(visible=True).count()
    assert texts > 0 and hit.startswith("rect") and "heatmapcell" in hit, (hit, texts)
    page.mouse.move(cx, cy)
    tip = page.locator(".bqplot_tooltip_div:visible")
    _wait(lambda: tip.count() == 1 and "cosine" in tip.inner_text(), timeout=15, what="the cell's tooltip at its centre")
    out.screenshot(path=str(OUT / "task-vectors-hover.png"))
    page.mouse.move(0, 0)


def _export(root, kernel, app, browser) -> None:
    path = app["root"] / "steer-export.html"
    _exec(kernel, f"w.steer = {{**w.steer, 'alpha': 20.0}}\nw.save_html({str(path)!r})")
    live = {m: _mode(root, m) for m in ("before", "after", "difference")}
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    try:
        page = ctx.new_page()
        page.goto(path.as_uri())
        page.wait_for_selector("#rw-app[data-ready='1'] .rw-heatmap-canvas[data-cols]", timeout=30_000)
        r = page.locator(".rw-root")
        r.wait_for(state="visible")
        for m in ("before", "after", "difference"):
            px = _mode(r, m)
            assert px[:FIRST] == live[m][:FIRST] and len({c for row in px for c in row}) > 3, m
        assert _mode(r, "after")[FIRST:] != _mode(r, "before")[FIRST:]
        _mode(r, "after")  # the offline tooltip lists the steered run's top-k (inlined in the export)
        _hover(r, FIRST, 0)
        r.locator(".rw-tooltip .rw-topk-list").wait_for(state="visible", timeout=10_000)
        assert "steered run" in r.locator(".rw-tooltip .rw-topk-run").inner_text()
        page.mouse.move(0, 0)
        r.locator(".rw-steer-toggle").click()
        assert r.locator(".rw-steer-alpha").is_disabled() and "α = 20" in r.locator(".rw-steer-note").inner_text()
        r.screenshot(path=str(OUT / "export-offline.png"))
    finally:
        ctx.close()


def test_steer_panel_in_jupyterlab_and_notebook7(app, chromium_browser):
    OUT.mkdir(parents=True, exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    kernel = None
    name = app["app"]
    try:
        _open(app, page)
        kernel = NotebookKernel(app, NOTEBOOK)
        root = page.locator(".rw-root").first
        _steer_by_hand(root, kernel)
        _modes(root, kernel)
        _pinned(root, kernel)
        root.screenshot(path=str(OUT / f"{name}-after.png"))
        _mode(root, "difference")
        _tooltip(root, kernel, name)
        root.screenshot(path=str(OUT / f"{name}-difference.png"))
        _after_topk(root, kernel, name)
        _typed_alpha(root, kernel)
        _after_streams(root, kernel)
        _texts(root, kernel)
        _geometry(root, "light")
        if name == "jupyterlab":
            _set_theme(page, "dark")
            _geometry(root, "dark")
            root.screenshot(path=str(OUT / f"{name}-dark.png"))
            _set_theme(page, "light")
            _export(root, kernel, app, chromium_browser)
            _task_vector_hover(page)
    except Exception:
        page.screenshot(path=str(OUT / f"{name}-failure.png"), full_page=True)
        raise
    finally:
        if kernel is not None:
            kernel.close()
        context.close()
