"""The heatmap's hover tooltip is readable whole wherever the widget is (a short 4-layer widget, steering on,
narrow outputs, the page scrolled so the heatmap is at the top or the foot of the view, the dark theme).

At every corner cell of the demo model's heatmap (first / last row × first / last position), as a person
hovers it:

* the tooltip's box lies inside the visible area: the window, cut by the notebook's scroller in JupyterLab and
  Notebook 7 (not only the widget's box: it floats in the page's top layer, above the next cells);
* it does not intersect the prompt editor or the toolbar;
* its last line is visible: painted on top there (``elementFromPoint`` at that line, inside the tooltip) and
  nothing cut off (``scrollHeight <= clientHeight``); the top-k column's probabilities inside its box;
* with steering on, the before / after / Δ lines are that last part.

The static export page (the same bundle and payload as in a notebook) covers window widths (widget ≈ 960, 700,
480 px) and heights, the scroll positions and the dark theme quickly; JupyterLab 4 and Notebook 7 then check the
real notebook (scroller, output areas, cells below). Screenshots: ``test-output/tooltip_fit/``.
"""

from __future__ import annotations

import re

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "tooltip_fit"
PROMPT = "Mr. Darcy said to Elizabeth that she"
STEER = {"on": True, "source": "unembed", "token": " Bennet", "layers": [1], "alpha": 8.0}

#: what a person sees of the shown tooltip: its box, the visible area it must stay in (the window cut by every
#: scroller that scrolls or is larger than the widget: the notebook's), the editor / toolbar boxes, and whether
#: its last line is on top (elementFromPoint, with the tooltip hit-testable for the probe), all in client px
MEASURE_JS = """root => {
  const tip = root.querySelector('.rw-tooltip');
  const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom}; };
  const de = document.documentElement;
  let view = {l: 0, t: 0, r: de.clientWidth, b: de.clientHeight};
  for (let e = root.parentElement; e && e !== document.body; e = e.parentElement) {
    const s = getComputedStyle(e);
    if (!['auto', 'scroll'].includes(s.overflowY) || e.scrollHeight <= e.clientHeight + 1) continue;
    const r = e.getBoundingClientRect();
    view = {l: Math.max(view.l, r.left), t: Math.max(view.t, r.top + e.clientTop), r: Math.min(view.r, r.right),
            b: Math.min(view.b, r.top + e.clientTop + e.clientHeight)};
  }
  // the last line: the deepest last element child with a box (the steering Δ row, else the top-k's last item)
  let last = tip;
  for (;;) { const kids = [...last.children].filter(k => k.getClientRects().length); if (!kids.length) break; last = kids[kids.length - 1]; }
  const lr = last.getBoundingClientRect();
  const old = tip.style.pointerEvents;
  tip.style.pointerEvents = 'auto';
  const hit = document.elementFromPoint(lr.left + Math.min(6, lr.width / 2), (lr.top + lr.bottom) / 2);
  tip.style.pointerEvents = old;
  const probs = [...tip.querySelectorAll('.rw-topk-prob')].filter(e => e.getClientRects().length).map(box);
  return {tip: box(tip), view, editor: box(root.querySelector('.rw-editor')), toolbar: box(root.querySelector('.rw-toolbar')),
          last: box(last), lastText: last.textContent, lastOnTop: !!hit && tip.contains(hit),
          cut: tip.scrollHeight > tip.clientHeight + 1 || tip.scrollWidth > tip.clientWidth + 1,
          probs, steer: !!tip.querySelector('.rw-steer-tip'), classes: tip.className, side: tip.dataset.side,
          bg: getComputedStyle(tip).backgroundColor, fg: getComputedStyle(tip).color};
}"""


def _inside(a: dict, b: dict, slack: float = 0.5) -> bool:
    return a["l"] >= b["l"] - slack and a["t"] >= b["t"] - slack and a["r"] <= b["r"] + slack and a["b"] <= b["b"] + slack


def _intersects(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]


def check_tooltip(root, what: str, *, steer: bool, cell: tuple[float, float] | None = None) -> dict:
    """The geometry assertions of one shown tooltip (see the module's docstring), and that it leaves the hovered
    `cell` (its centre, client px) in sight; returns the measures."""
    m = root.evaluate(MEASURE_JS)
    if cell is not None:
        x, y = cell
        assert not _intersects(m["tip"], {"l": x - 1, "t": y - 1, "r": x + 1, "b": y + 1}), (what, "covers the hovered cell", m["tip"], cell)
    assert _inside(m["tip"], m["view"]), (what, "outside the visible area", m["tip"], m["view"], m["side"], m["classes"])
    assert not _intersects(m["tip"], m["editor"]), (what, "covers the editor", m["tip"], m["editor"])
    assert not _intersects(m["tip"], m["toolbar"]), (what, "covers the toolbar", m["tip"], m["toolbar"])
    assert not m["cut"], (what, "content cut off", m)
    assert m["lastOnTop"] and _inside(m["last"], m["tip"]) and _inside(m["last"], m["view"]), (what, "last line hidden", m)
    assert m["probs"] or m["steer"], (what, "no top-k list", m)
    assert all(_inside(p, m["tip"]) for p in m["probs"]), (what, "top-k column cut", m)
    assert m["steer"] == steer, (what, m["classes"])
    return m


def hover(root, row: int, pos: int) -> tuple[float, float]:
    """Hover cell (row, pos) as a person does (the pointer moves there; Playwright scrolls it into view first);
    returns the cell's centre in client px."""
    canvas = root.locator(".rw-heatmap-canvas")
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    x, y = pos * cw + cw / 2, row * rh + rh / 2
    overlay = root.locator(".rw-heatmap-overlay")
    overlay.hover(position={"x": x, "y": y})
    # the top-k list (the steered "after" view: a line saying the list is the plain run's)
    root.locator(".rw-tooltip .rw-topk-item, .rw-tooltip .rw-topk-error").first.wait_for(timeout=15_000)
    root.page.wait_for_timeout(50)
    box = overlay.bounding_box()
    return box["x"] + x, box["y"] + y


def corners(root) -> list[tuple[int, int]]:
    canvas = root.locator(".rw-heatmap-canvas")
    R, T = int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))
    return [(0, 0), (0, T - 1), (R - 1, 0), (R - 1, T - 1)]


def scroll_to(root, where: str) -> None:
    """Scroll the page (the notebook) so the heatmap's top is at the top of the view, or its foot at the foot."""
    block = "start" if where == "top" else "end"
    root.locator(".rw-heatmap-scroll").evaluate(f"e => e.scrollIntoView({{block: '{block}'}})")
    root.page.wait_for_timeout(150)


def sweep(root, name: str, *, steer: bool) -> list[str]:
    """Every corner at both scroll positions; the screenshot of the last-row / last-position one."""
    seen = []
    for where in ("top", "foot"):
        for row, pos in corners(root):
            scroll_to(root, where)
            cell = hover(root, row, pos)
            m = check_tooltip(root, f"{name} {where} ({row}, {pos})", steer=steer, cell=cell)
            seen.append(f"{m['side']}:{m['classes']}")
            if (row, pos) in ((0, 0), corners(root)[-1]):
                root.page.screenshot(path=str(OUT / f"{name}-{where}-{row}-{pos}.png"))
            root.page.mouse.move(0, 0)
    return seen


# ------------------------------------------------------------------------------------ the static export page


@pytest.fixture(scope="module")
def exports(tmp_path_factory, frontend_bundle):
    from resid_widgets import ResidWidget, Session

    s = Session()
    d = tmp_path_factory.mktemp("tooltip_fit")
    w = ResidWidget(s, PROMPT, targets=[" Bennet"], top_k=10)
    plain = w.save_html(d / "plain.html")
    w.close()
    w = ResidWidget(s, PROMPT, targets=[" Bennet"], top_k=10, steer=STEER)
    assert w.steered is not None
    steered = w.save_html(d / "steered.html")
    w.close()
    return {"plain": plain, "steered": steered}


def _open(browser, path, width: int, height: int, dark: bool = False):
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme="dark" if dark else "light")
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=30_000)
    # a page taller than the window (text after the widget), so the heatmap can sit at the foot of the view
    page.evaluate("() => { const d = document.createElement('div'); d.style.height = '1200px'; d.textContent = 'more cells'; document.body.append(d); }")
    page.wait_for_timeout(200)
    return context, page


@pytest.mark.parametrize(
    "kind,width,height",
    [("steered", 1000, 800), ("steered", 740, 640), ("steered", 520, 600), ("plain", 740, 480), ("steered", 740, 420)],
)
def test_tooltip_fits_in_the_export_page(exports, chromium_browser, kind, width, height):
    OUT.mkdir(parents=True, exist_ok=True)
    context, page = _open(chromium_browser, exports[kind], width, height)
    try:
        root = page.locator(".rw-root").first
        seen = sweep(root, f"export-{kind}-{width}x{height}", steer=kind == "steered")
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), "page scrolls sideways"
        print("seen", kind, width, height, seen)
        if (width, height) == (1000, 800):  # room enough: every value shown, nothing left to the pinned panel
            assert not any("compact" in x or "capped" in x for x in seen), seen
        if (width, height) == (740, 480):  # the heatmap at the foot of a short window: the top-k list cut, a note
            assert any("capped" in x for x in seen), seen
    finally:
        context.close()


def _luminance(css: str) -> float:
    r, g, b = (float(v) / 255 for v in re.findall(r"[\d.]+", css)[:3])
    f = lambda v: v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4  # noqa: E731
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b)


def test_tooltip_fits_in_the_dark_theme(exports, chromium_browser):
    context, page = _open(chromium_browser, exports["steered"], 740, 640, dark=True)
    try:
        root = page.locator(".rw-root").first
        scroll_to(root, "foot")
        row, pos = corners(root)[-1]
        hover(root, row, pos)
        m = check_tooltip(root, "dark", steer=True)
        bg, fg = _luminance(m["bg"]), _luminance(m["fg"])
        assert bg < 0.2, m["bg"]  # the dark theme's background, also in the top layer
        assert (max(bg, fg) + 0.05) / (min(bg, fg) + 0.05) >= 4.5, (m["bg"], m["fg"])
        page.screenshot(path=str(OUT / "export-dark.png"))
    finally:
        context.close()


# ------------------------------------------------------------------------------------ JupyterLab and Notebook 7

NOTEBOOK = "tooltip_fit.ipynb"
CELLS = [
    f"from resid_widgets import ResidWidget\nw = ResidWidget(prompt={PROMPT!r}, targets=[' Bennet'], top_k=10, steer={STEER!r}, device='cpu')\nw",
    "from IPython.display import HTML\nHTML('<div style=\"height: 1400px\">the next cells</div>')",  # a notebook taller than the view
]
#: window sizes: the widget about 700 px wide, then about 480 px (JupyterLab's file browser stays open)
SIZES = {"jupyterlab": [(1100, 700), (880, 640)], "notebook": [(800, 700), (580, 640)]}


@pytest.fixture(scope="module", params=["jupyterlab", "notebook"])
def app(request, tmp_path_factory, frontend_bundle):
    from test_jupyterlab import _server

    for server in _server(request.param, tmp_path_factory):
        yield {**server, "app": request.param}


def _run_notebook(app, page) -> None:
    from labnb import open_in_lab, write_notebook

    write_notebook(app["root"] / NOTEBOOK, CELLS)
    open_in_lab(app, page, NOTEBOOK, app="lab/tree" if app["app"] == "jupyterlab" else "notebooks")
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    for _ in CELLS:
        page.keyboard.press("Shift+Enter")
    page.wait_for_selector(".rw-root[data-steer='after'] .rw-heatmap-canvas[data-cols]", timeout=180_000)
    page.wait_for_timeout(500)


def test_tooltip_fits_in_jupyterlab_and_notebook7(app, chromium_browser):
    OUT.mkdir(parents=True, exist_ok=True)
    name = app["app"]
    w0, h0 = SIZES[name][0]
    context = chromium_browser.new_context(viewport={"width": w0, "height": h0})
    page = context.new_page()
    try:
        _run_notebook(app, page)
        root = page.locator(".rw-root").first
        widths = []
        for w, h in SIZES[name]:
            page.set_viewport_size({"width": w, "height": h})
            page.wait_for_timeout(500)
            widths.append(root.evaluate("e => e.getBoundingClientRect().width"))
            sweep(root, f"{name}-{w}x{h}", steer=True)
        assert widths[0] >= 600 and 380 <= widths[1] <= 560, widths  # about 700 and 480 px
        if name == "jupyterlab":  # the dark theme: the tooltip in the top layer takes the theme's colours
            from test_explorer_geometry import _set_theme

            _set_theme(page, "dark")
            scroll_to(root, "foot")
            row, pos = corners(root)[-1]
            hover(root, row, pos)
            m = check_tooltip(root, "jupyterlab dark", steer=True)
            bg, fg = _luminance(m["bg"]), _luminance(m["fg"])
            assert bg < 0.2 and (max(bg, fg) + 0.05) / (min(bg, fg) + 0.05) >= 4.5, (m["bg"], m["fg"])
            page.screenshot(path=str(OUT / f"{name}-dark.png"))
            _set_theme(page, "light")
    except Exception:
        page.screenshot(path=str(OUT / f"{name}-failure.png"))
        raise
    finally:
        context.close()
