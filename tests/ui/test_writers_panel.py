"""ResidWidget's own Writers panel in a real browser: JupyterLab 4 and Notebook 7 (Debian's Chromium), demo model.

A click on a heatmap cell opens the panel: its bars are painted (pixels), in the order and with the values the
kernel computes with ``AttributionRun`` (independently of the widget's caches); labels, ticks and captions do not
overlap and stay inside the panel; the panel stays inside the widget and below the editor and toolbar; hover shows
the exact value; one writer at every position equals the kernel's; Escape closes it and ``w`` opens / hides it;
changing the targets from Python re-requests the pinned cell for the new analysis; the dark theme is readable
(pixel contrast of the labels); the offline export's panel works for a computed cell and says "not included in this
file" for another. Screenshots: ``test-output/writers/``.
"""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from conftest import ROOT
from test_explorer_geometry import _set_theme
from test_frontend import png_pixels
from test_jupyterlab import _wait, lab, notebook7  # noqa: F401  (the server fixtures, reused)
from labnb import open_in_lab, write_notebook

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "writers"
PROMPT = "Mr. and Mrs. Bennet"
CELLS = [
    "from resid_widgets import ResidWidget, Session\n"
    f"w = ResidWidget(Session(device='cpu'), {PROMPT!r}, targets=[' Bennet', ' Darcy'])\nw",
]
#: run in the kernel: the panel's numbers computed independently of the widget's caches (a fresh AttributionRun)
EXPECTED = """
def _writers_expected(row, pos, writer):
    import numpy as np
    from resid_widgets.session.attribution import AttributionRun
    a = w.analysis
    att = AttributionRun(w.session, [int(i) for i in a.token_ids]).dla(int(a.target_ids[0]), int(a.target_ids[1]), row=row)
    col = att.values[:, pos]
    top = np.argsort(-np.abs(col), kind="stable")[:12]
    every = att.values[att.labels.index(writer)].tolist() if writer in att.labels else None
    return {"top": [[att.labels[i], float(col[i])] for i in top], "every": every}
"""


class Kernel:
    """A second client on this notebook's kernel (the server runs the e2e notebook's kernel too)."""

    def __init__(self, server, path: str):
        from jupyter_client import BlockingKernelClient

        with urllib.request.urlopen(f"{server['url']}/api/sessions?token={server['token']}") as r:
            (kid,) = [s["kernel"]["id"] for s in json.load(r) if s["path"].endswith(path)]
        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(server["runtime"] / f"kernel-{kid}.json"))
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def run(self, code: str) -> None:
        reply = self.client.execute_interactive(code, timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]

    def eval(self, expr: str):
        out = []
        reply = self.client.execute_interactive(
            f"import json as _j; print(_j.dumps({expr}))", timeout=120,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return json.loads("".join(out))

    def close(self):
        self.client.stop_channels()


def _expected(kernel, row: int, pos: int, writer: str = "") -> dict:
    got = kernel.eval(f"_writers_expected({row}, {pos}, {writer!r})")
    order = sorted(got["top"], key=lambda lv: -lv[1])  # top 12 by |value|, sorted by value (stable)
    return {"labels": [name for name, _ in order], "values": [v for _, v in order], "every": got["every"]}


def _click(page, row: int, pos: int) -> None:
    canvas = page.locator(".rw-heatmap-canvas").first
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    page.locator(".rw-heatmap-overlay").first.click(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})


def _bars(page) -> list[dict]:
    return page.locator(".rw-writers-bar").evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); return {label: e.dataset.label, value: Number(e.dataset.value),"
        " x: r.x, y: r.y, w: r.width, h: r.height}; })"
    )


GEOMETRY_JS = """panel => {
  const box = r => { const b = r.getBoundingClientRect(); return {x: b.left, y: b.top, r: b.right, b: b.bottom, w: b.width, h: b.height}; };
  const p = box(panel), root = box(panel.closest('.rw-root'));
  const above = ['.rw-editor', '.rw-toolbar'].map(s => box(panel.closest('.rw-root').querySelector(s)));
  const texts = [...panel.querySelectorAll('text, .rw-writers-caption, .rw-writers-title, .rw-writers-hide')].map(box).filter(b => b.w > 0);
  const problems = [];
  for (const t of texts) if (t.x < p.x - 0.5 || t.r > p.r + 0.5 || t.y < p.y - 0.5 || t.b > p.b + 0.5) problems.push(['outside the panel', t]);
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
    const a = texts[i], b = texts[j];
    if (Math.min(a.r, b.r) - Math.max(a.x, b.x) > 0.5 && Math.min(a.b, b.b) - Math.max(a.y, b.y) > 0.5) problems.push(['overlap', a, b]);
  }
  if (p.x < root.x - 0.5 || p.r > root.r + 0.5 || p.b > root.b + 0.5) problems.push(['panel outside the widget', p, root]);
  for (const a of above) if (p.y < a.b) problems.push(['panel over the editor / toolbar', p, a]);
  return {problems, texts: texts.length, panel: p};
}"""


def _luminance(rgb: np.ndarray) -> np.ndarray:
    c = rgb / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return c @ np.array([0.2126, 0.7152, 0.0722])


def _label_contrast(page, path) -> float:
    """The WCAG contrast between the bar labels' darkest/lightest pixels and the panel's background (pixels)."""
    panel = page.locator(".rw-writers").first
    img = png_pixels(page, panel.screenshot(path=str(path))).astype(np.float64)
    pb = panel.bounding_box()
    lb = page.locator(".rw-writers-label").first.bounding_box()
    x0, y0 = int(lb["x"] - pb["x"]), int(lb["y"] - pb["y"])
    crop = _luminance(img[y0 : y0 + int(lb["height"]), x0 : x0 + int(lb["width"])].reshape(-1, 3))
    bg = float(np.median(_luminance(img[2:6, 20:60].reshape(-1, 3))))
    far = crop[np.argmax(np.abs(crop - bg))]
    lo, hi = sorted([bg, float(far)])
    return (hi + 0.05) / (lo + 0.05)


def _panel_matches_kernel(page, kernel, row: int, pos: int, tag: str) -> None:
    page.wait_for_selector(f".rw-writers[data-state='painted'][data-row='{row}'][data-pos='{pos}']", timeout=60_000)
    want = _expected(kernel, row, pos)
    bars = _bars(page)
    assert [b["label"] for b in bars] == want["labels"], (bars, want)
    assert np.allclose([b["value"] for b in bars], want["values"], rtol=1e-5, atol=1e-6)
    values = [b["value"] for b in bars]
    assert values == sorted(values, reverse=True)  # sorted by value, positive and negative
    assert any(v > 0 for v in values) and any(v < 0 for v in values)
    assert all(b["w"] >= 1 and b["h"] > 5 for b in bars)
    # painted: the pixel at each bar's centre is the bar's colour, not the panel's background
    panel = page.locator(".rw-writers").first
    img = png_pixels(page, panel.screenshot(path=str(OUT / f"{tag}.png")))
    pb = panel.bounding_box()
    bg = img[3, 30]
    for b in bars:
        px = img[int(b["y"] - pb["y"] + b["h"] / 2), int(b["x"] - pb["x"] + max(0, b["w"] / 2 - 0.5))]
        assert np.abs(px - bg).sum() > 30, (b, px, bg)
    geo = panel.evaluate(GEOMETRY_JS)
    assert geo["texts"] > 20 and not geo["problems"], geo["problems"][:5]
    assert page.locator(".rw-writers-head").count() == 4 * 4 and page.locator(".rw-writers-layer").count() == 2 * 4


def _hover_exact(page, kernel, row: int, pos: int) -> None:
    bar = page.locator(".rw-writers-bar").first
    bar.hover()
    tip = page.locator(".rw-writers-tip")
    _wait(lambda: tip.is_visible(), what="the hover tip")
    label, value = tip.inner_text().rsplit(": ", 1)
    want = _expected(kernel, row, pos)
    assert label == want["labels"][0] and abs(float(value) - want["values"][0]) <= 1e-6 * max(1.0, abs(want["values"][0]))
    t, p = tip.bounding_box(), page.locator(".rw-writers").first.bounding_box()
    assert p["x"] <= t["x"] and t["x"] + t["width"] <= p["x"] + p["width"] + 0.5 and p["y"] <= t["y"] <= p["y"] + p["height"]
    head = page.locator(".rw-writers-head[data-layer='1'][data-head='2']")
    head.hover()
    _wait(lambda: tip.inner_text().startswith("L1H2: "), what="the head grid's tip")


def _every_position(page, kernel, row: int, pos: int) -> None:
    page.select_option(".rw-writers-select", label="L2H2")
    page.wait_for_function("n => document.querySelectorAll('.rw-writers-pos').length === n", arg=kernel.eval("w.analysis.n_tokens"), timeout=30_000)
    got = page.locator(".rw-writers-pos").evaluate_all("els => els.map(e => Number(e.dataset.value))")
    assert np.allclose(got, _expected(kernel, row, pos, "L2H2")["every"], rtol=1e-5, atol=1e-6)


def _keys(page, kernel, row: int, pos: int) -> None:
    panel = page.locator(".rw-writers").first
    page.keyboard.press("Escape")  # unpin: the panel closes
    _wait(lambda: not panel.is_visible() and kernel.eval("w.selected") == [], what="Escape to close the panel")
    page.locator(".rw-heatmap-scroll").first.focus()
    canvas = page.locator(".rw-heatmap-canvas").first
    cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
    page.locator(".rw-heatmap-overlay").first.hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})
    page.keyboard.press("w")  # nothing pinned: pins the hovered cell, which opens the panel
    page.wait_for_selector(f".rw-writers[data-state='painted'][data-row='{row}'][data-pos='{pos}']", timeout=30_000)
    _wait(lambda: kernel.eval("w.selected") == [row, pos], what="w to pin the hovered cell")
    page.keyboard.press("w")
    _wait(lambda: not panel.is_visible(), what="w to hide the panel")
    page.keyboard.press("w")
    _wait(lambda: panel.is_visible(), what="w to show it again")
    assert "w writers" in page.locator(".rw-keys-hint").first.inner_text()


def _edit_rerequests(page, kernel, row: int, pos: int) -> None:
    seq = page.locator(".rw-writers").first.get_attribute("data-seq")
    before = {b["label"]: b["value"] for b in _bars(page)}
    kernel.eval("(setattr(w, 'targets', [' Darcy', ' Bennet']), 0)[1]")  # a new analysis while the cell is pinned
    page.wait_for_function(
        "s => { const p = document.querySelector('.rw-writers'); return p.dataset.seq !== s && p.dataset.state === 'painted'; }", arg=seq, timeout=60_000
    )
    assert "' Darcy' − ' Bennet'" in page.locator(".rw-writers-sum").first.inner_text()
    after = {b["label"]: b["value"] for b in _bars(page)}
    assert all(abs(after[k] + v) <= 1e-5 * max(1, abs(v)) for k, v in before.items() if k in after)  # the direction flipped
    kernel.eval("(setattr(w, 'targets', [' Bennet', ' Darcy']), 0)[1]")
    page.wait_for_function("() => document.querySelector('.rw-writers-sum').innerText.includes(\"' Bennet' − ' Darcy'\")", timeout=60_000)
    # an edit typed in the browser (streamed: begin, lens blocks, final payload) while the cell is pinned
    seq = page.locator(".rw-writers").first.get_attribute("data-seq")
    prompt = page.locator(".rw-prompt").first
    prompt.click()
    prompt.press("End")
    prompt.type(" said")
    _wait(lambda: kernel.eval("w.prompt").endswith(" said"), timeout=60, what="the typed edit to reach the kernel")
    page.wait_for_function(
        "s => { const p = document.querySelector('.rw-writers'); return p.dataset.seq !== s && p.dataset.state === 'painted'; }", arg=seq, timeout=60_000
    )
    _wait(lambda: page.locator(".rw-writers").first.get_attribute("data-seq") == str(kernel.eval("w._meta['seq']")), timeout=30, what="the panel on the final seq")
    page.wait_for_selector(".rw-writers[data-state='painted']", timeout=30_000)
    assert [b["label"] for b in _bars(page)] == _expected(kernel, row, pos)["labels"]  # the new analysis's numbers
    page.locator(".rw-heatmap-scroll").first.focus()


def _export(page, kernel, context, row: int, pos: int, tag: str) -> None:
    path = OUT / f"export-{tag}.html"
    kernel.eval(f"str(w.save_html({str(path)!r}))")
    offline = context.new_page()
    try:
        offline.goto(path.as_uri())
        offline.wait_for_selector("#rw-app[data-ready='1']", timeout=30_000)
        # the cell pinned when saving is pinned in the file: its panel paints from the inlined cell
        offline.wait_for_selector(f".rw-writers[data-state='painted'][data-row='{row}'][data-pos='{pos}']", timeout=10_000)
        assert [b["label"] for b in _bars(offline)] == _expected(kernel, row, pos)["labels"]
        offline.select_option(".rw-writers-select", label="L2H2")  # fetched in the notebook: in the file
        offline.wait_for_selector(".rw-writers-pos", timeout=10_000)
        offline.screenshot(path=str(OUT / f"export-{tag}.png"), full_page=True)
        _click(offline, 1, 0)  # never asked in the notebook
        offline.wait_for_selector(".rw-writers[data-state='error']", timeout=10_000)
        assert "not included in this file" in offline.locator(".rw-writers-error").inner_text()
        assert offline.locator(".rw-heatmap-canvas").is_visible()
    finally:
        offline.close()


@pytest.mark.parametrize("app", ["jupyterlab", "notebook7"])
def test_writers_panel(app, request, chromium_browser):
    server = request.getfixturevalue("lab" if app == "jupyterlab" else "notebook7")
    OUT.mkdir(parents=True, exist_ok=True)
    name = f"writers-{app}.ipynb"
    write_notebook(server["root"] / name, CELLS)
    context = chromium_browser.new_context(viewport={"width": 1300, "height": 1500})
    page = context.new_page()
    kernel = None
    try:
        open_in_lab(server, page, name, app="lab/tree" if app == "jupyterlab" else "notebooks")
        page.locator(".jp-Cell .jp-InputArea-editor").first.click()
        page.keyboard.press("Shift+Enter")
        page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=120_000)
        kernel = Kernel(server, name)
        kernel.run(EXPECTED)
        T = kernel.eval("w.analysis.n_tokens")
        row, pos = 3, T - 1
        _click(page, row, pos)
        _panel_matches_kernel(page, kernel, row, pos, f"{app}-light")
        _hover_exact(page, kernel, row, pos)
        _every_position(page, kernel, row, pos)
        _keys(page, kernel, row, pos)
        _edit_rerequests(page, kernel, row, pos)
        _export(page, kernel, context, row, pos, app)
        _set_theme(page, "dark")
        page.mouse.move(0, 0)
        page.wait_for_timeout(500)
        contrast = _label_contrast(page, OUT / f"{app}-dark.png")
        print(f"{app}: dark-theme label contrast {contrast:.1f}")
        assert contrast >= 4.5, contrast
        _set_theme(page, "light")
    finally:
        if kernel is not None:
            kernel.close()
        context.close()
