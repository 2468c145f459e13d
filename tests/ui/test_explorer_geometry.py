"""Geometry of every explorer in JupyterLab 4 (Debian's Chromium), as the example notebooks build them.

One JupyterLab server (the ``lab`` fixture of ``test_jupyterlab.py``), one notebook that builds
ProjectionExplorer + CompareWidget (000), two LogitDiffExplorers (001), two TaskVectorExplorers (003), a
ContributionExplorer (004), and a LensKLExplorer + a two-lens CompareWidget (005) on the embedded demo model. The page is then measured at output widths of about
950 px and 1,400 px (browser windows of 1,400 and 1,850 px), in the light and the dark theme, after a
control change in each explorer. A *defect* is what a reader would see as broken:

* ``text-overlap``: two visible SVG text elements of one figure overlap (their rotated boxes, by more than 1 px);
* ``text-outside``: a visible SVG text element extends outside its figure;
* ``legend-covers``: a legend box (bqplot's, or an HTML legend) contains a plotted mark (a line's points,
  a dot, a bar);
* ``text-over-marks``: an axis text (tick label, axis title) lies over plotted marks;
* ``hscroll``: the output area or an element inside it scrolls horizontally;
* ``truncated``: a dropdown or text field whose text does not fit it;
* ``marker-colour``: a marker drawn on a line's vertex has another colour than every line through it;
* ``contrast``: a text's colour against what lies under it (the cell of a heatmap, or the page) has a
  contrast ratio below 3 (WCAG's large-text level).

Screenshots of every output area in every configuration: ``test-output/explorers/``; the defects found,
per explorer x width x theme, are written to ``test-output/explorers/defects.json``.
"""

from __future__ import annotations

import json

import pytest

from conftest import ROOT
from labnb import open_in_lab, write_notebook
from test_jupyterlab import lab  # noqa: F401  (the JupyterLab server fixture, reused)

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output" / "explorers"
NOTEBOOK = "explorers.ipynb"
#: window width -> the output area's width it gives (about)
WINDOWS = {"950": 1400, "1400": 1850}
THEMES = ("light", "dark")
HEIGHT = 1700  # tall enough that each output fits the window (whole screenshots) and every figure gets laid out

SETUP = '''
from resid_widgets import Session, ProjectionExplorer, CompareWidget, LogitDiffExplorer, TaskVectorExplorer, ContributionExplorer, LensKLExplorer
session = Session()
reasoning_chain = """Problem: If a shirt costs $15 and is on sale for 20% off, what is the sale price?

Step 1: Calculate the discount amount.
Discount = $15 × 0.20 = $3

Step 2: Subtract the discount from the original price.
Sale price = $15 - $3 = $12

Therefore, the sale price of the shirt is $12."""
groups = {
    "factual": ["The capital of France is", "Mr. and Mrs. Bennet had five", "Emma Woodhouse was handsome, clever, and"],
    "reasoning": ["If 5x + 3 = 18, then x equals", "All men are mortal. Socrates is a man. Therefore, Socrates is",
                  "2 + 2 equals"],
    "creative": ["Once upon a time, in a quiet village,", "The moon rose over the silent hills and",
                 "She dreamed of a garden where"],
    "code": ["def add(a, b):\\n    return", "for i in range(10):\\n    print(", "import numpy as np\\nx = np."],
}
tasks = ["minimum", "maximum", "sum", "difference", "product"]
number_pairs = [(25, 9), (42, 11), (7, 3), (99, 1), (15, 15)]
tv_prompts, tv_labels = [], []
for task in tasks:
    for a, b in number_pairs:
        tv_prompts.append(f"Answer minimally: Given the numbers {a} and {b} calculate the {task}")
        tv_labels.append(task)
ld_prompts = [
    "Go.", "Hello.", "It was a fine morning.", "She said nothing more.", "Mr. Darcy bowed and walked away.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
]
ld_answers = [" The", " The", " The", " She", " He", " It"]
sentences = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, seemed to unite some of the best blessings of existence.",
    "The family of Dashwood had long been settled in Sussex.",
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took up any book but the Baronetage.",
    "The quick brown fox jumps over the lazy dog.",
]
'''

#: (name, cell source, the number of figures it shows at once)
EXPLORERS = [
    ("000-projection", 'pe = ProjectionExplorer(session, {"factual": "The capital of France is", "reasoning": '
     '"If 5x + 3 = 18, then x equals"}, prompt=reasoning_chain, markers={"Problem": "Problem", "Step 1": "Step 1", '
     '"Step 2": "Step 2", "Conclusion": "Therefore"}, groups=groups)\npe', 6),
    ("000-compare", 'cw = CompareWidget(session, "The capital of France is", "If 5x + 3 = 18, then x equals", '
     'metric="projection")\ncw', 3),
    ("001-logit-diff-one", 'one = LogitDiffExplorer(session, "This is a sentence.", answers=" It", counterfactuals=" it", '
     'top_k=15)\none', 2),
    ("001-logit-diff", "lde = LogitDiffExplorer(session, ld_prompts, ld_answers, [a.lower() for a in ld_answers], top_k=10)\nlde", 2),
    ("003-task-vectors-25", "tv = TaskVectorExplorer(session, tv_prompts, tv_labels)\ntv", 3),
    ("003-task-vectors-5", 'tv5 = TaskVectorExplorer(session, [f"Answer minimally: Given the numbers 25 and 9 calculate the {t}" '
     "for t in tasks], tasks)\ntv5", 3),
    ("004-contributions", "ce = ContributionExplorer(session, sentences)\nce", 3),
    ("005-lens-kl", "lx = LensKLExplorer(session)\nlx", 2),
    ("005-compare-lenses", 'cl = CompareWidget(session, "Mr. and Mrs. Bennet had five daughters, and", lenses=("logit", "tuned"))\ncl', 3),
]

MEASURE_JS = r"""
(root) => {
  const defects = [];
  const add = (kind, what) => defects.push(kind + ": " + what);
  const shown = (el) => {
    for (let e = el; e && e !== document.body; e = e.parentElement) {
      const cs = getComputedStyle(e);
      if (cs.display === "none" || cs.visibility === "hidden" || parseFloat(cs.opacity) === 0) return false;
      if (e.getAttribute && e.getAttribute("display") === "none") return false;
    }
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  // a text's rotated box in page coordinates: four corners
  const quad = (el) => {
    const b = el.getBBox(), m = el.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]].map(([x, y]) => {
      const p = new DOMPoint(x, y).matrixTransform(m);
      return [p.x, p.y];
    });
  };
  // separating-axis test for two convex quads, overlapping by more than tol px
  const overlap = (a, b, tol) => {
    for (const poly of [a, b]) {
      for (let i = 0; i < 4; i++) {
        const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
        let nx = y2 - y1, ny = x1 - x2;
        const len = Math.hypot(nx, ny);
        if (len < 1e-9) continue;
        nx /= len; ny /= len;
        const pa = a.map(([x, y]) => x * nx + y * ny), pb = b.map(([x, y]) => x * nx + y * ny);
        const o = Math.min(Math.max(...pa), Math.max(...pb)) - Math.max(Math.min(...pa), Math.min(...pb));
        if (o <= tol) return false;
      }
    }
    return true;
  };
  const rgb = (s) => {
    const m = (s || "").match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?/);
    if (!m) return null;
    return { r: +m[1], g: +m[2], b: +m[3], a: m[4] === undefined ? 1 : +m[4] };
  };
  const lum = (c) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
  };
  const contrast = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
  const pageBackground = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0.5) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const key = (c) => c ? `${Math.round(c.r)},${Math.round(c.g)},${Math.round(c.b)}` : "none";
  const label = (t) => JSON.stringify(t.textContent.trim().slice(0, 40));
  const inside = (p, r, tol) => p[0] > r.left + tol && p[0] < r.right - tol && p[1] > r.top + tol && p[1] < r.bottom - tol;

  const figures = [...root.querySelectorAll(".bqplot.figure")].filter(shown);
  const stats = { figures: figures.length, texts: 0, marks: 0, legends: 0, markers: 0 };
  figures.forEach((fig, fi) => {
    const fr = fig.getBoundingClientRect();
    const fname = `fig ${fi}`;
    const texts = [...fig.querySelectorAll("svg text")].filter((t) => t.textContent.trim() && shown(t));
    stats.texts += texts.length;
    const quads = texts.map(quad);
    // text overlaps
    for (let i = 0; i < texts.length; i++)
      for (let j = i + 1; j < texts.length; j++)
        if (overlap(quads[i], quads[j], 1)) add("text-overlap", `${fname} ${label(texts[i])} / ${label(texts[j])}`);
    // text outside its figure
    texts.forEach((t, i) => {
      if (quads[i].some(([x, y]) => x < fr.left - 1 || x > fr.right + 1 || y < fr.top - 1 || y > fr.bottom + 1))
        add("text-outside", `${fname} ${label(t)}`);
    });
    // the plotted marks: points of lines, dots, bars
    const svg = fig.querySelector("svg.svg-figure");
    const marks = [];
    const lines = [];
    svg.querySelectorAll("path.line").forEach((p) => {
      if (p.closest(".g_legend") || !shown(p)) return;
      const stroke = rgb(getComputedStyle(p).stroke);
      if (!stroke || stroke.a === 0) return;
      const m = p.getScreenCTM();
      const pts = [];
      const L = p.getTotalLength();
      for (let s = 0; s <= L; s += 3) { const q = p.getPointAtLength(s).matrixTransform(m); pts.push([q.x, q.y]); }
      const verts = [];
      const nums = (p.getAttribute("d") || "").match(/-?\d*\.?\d+(?:e[-+]?\d+)?/gi) || [];
      const cmds = (p.getAttribute("d") || "").replace(/[^MLml]/g, "");
      if (/^[ML]*$/.test(cmds)) for (let k = 0; k + 1 < nums.length; k += 2) {
        const q = new DOMPoint(+nums[k], +nums[k + 1]).matrixTransform(m); verts.push([q.x, q.y]);
      }
      lines.push({ stroke: key(stroke), verts });
      pts.forEach((q) => marks.push(q));
    });
    const dots = [...svg.querySelectorAll("path.dot")].filter((d) => !d.closest(".g_legend") && shown(d));
    dots.forEach((d) => { const r = d.getBoundingClientRect(); marks.push([(r.left + r.right) / 2, (r.top + r.bottom) / 2]); });
    const bars = [...svg.querySelectorAll("rect.bar")].filter(shown);
    bars.forEach((b) => {
      const r = b.getBoundingClientRect();
      if (r.height < 0.5 || r.width < 0.5) return;
      for (let x = r.left + 1; x < r.right; x += 3) for (let y = r.top + 1; y < r.bottom; y += 3) marks.push([x, y]);
    });
    stats.marks += marks.length;
    // axis text (ticks, axis titles) never lies over the plotted marks
    const inQuad = (p, q) => {
      let sign = 0;
      for (let i = 0; i < 4; i++) {
        const [x1, y1] = q[i], [x2, y2] = q[(i + 1) % 4];
        const c = (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1);
        if (Math.abs(c) < 1e-9) continue;
        if (sign === 0) sign = Math.sign(c); else if (Math.sign(c) !== sign) return false;
      }
      return true;
    };
    texts.forEach((t, i) => {
      if (!t.closest(".axis")) return;
      const hit = marks.filter((p) => inQuad(p, quads[i])).length;
      if (hit) add("text-over-marks", `${fname} ${label(t)} over ${hit} mark point(s)`);
    });
    // legends: bqplot's own, and HTML legends next to the figure (same chart box)
    const boxes = [...svg.querySelectorAll(".g_legend")].filter((g) => shown(g) && g.querySelector(".legendtext"))
      .map((g) => g.getBoundingClientRect());
    const chart = fig.closest(".rw-chart");
    if (chart) chart.querySelectorAll(".rw-legend").forEach((l) => { if (shown(l)) boxes.push(l.getBoundingClientRect()); });
    stats.legends += boxes.length;
    boxes.forEach((r, bi) => {
      const hit = marks.filter((q) => inside(q, r, 1)).length;
      if (hit) add("legend-covers", `${fname} legend ${bi} covers ${hit} mark point(s)`);
    });
    // markers on a line's vertex have that line's colour
    dots.forEach((d) => {
      const r = d.getBoundingClientRect(), c = [(r.left + r.right) / 2, (r.top + r.bottom) / 2];
      const through = lines.filter((l) => l.verts.some(([x, y]) => Math.abs(x - c[0]) < 1.5 && Math.abs(y - c[1]) < 1.5));
      if (!through.length) return;
      stats.markers += 1;
      const fill = key(rgb(getComputedStyle(d).fill));
      if (!through.some((l) => l.stroke === fill)) add("marker-colour", `${fname} marker ${fill} on line(s) ${through.map((l) => l.stroke).join(" | ")}`);
    });
    // contrast of every text against what lies under its centre
    const cells = [...svg.querySelectorAll("rect")].filter((r) => r.closest(".heatmapcell, .heatmap, g") && rgb(getComputedStyle(r).fill) && shown(r) &&
      r.getAttribute("class") !== "plotarea_events" && !r.closest(".g_legend") && !r.classList.contains("bar"));
    const bg = pageBackground(fig);
    texts.forEach((t, i) => {
      const fg = rgb(getComputedStyle(t).fill);
      if (!fg || fg.a === 0) return;
      const cx = quads[i].reduce((s, p) => s + p[0], 0) / 4, cy = quads[i].reduce((s, p) => s + p[1], 0) / 4;
      let under = bg;
      for (const r of cells) {
        const b = r.getBoundingClientRect();
        const f = rgb(getComputedStyle(r).fill);
        if (f.a > 0.5 && b.width < fr.width * 0.9 && inside([cx, cy], b, 0)) under = f;
      }
      const cr = contrast(fg, under);
      if (cr < 3) add("contrast", `${fname} ${label(t)} ${key(fg)} on ${key(under)} (${cr.toFixed(2)})`);
    });
  });
  // horizontal scrolling, and truncated controls
  const scrollers = [root, ...root.querySelectorAll("*")].filter((e) => {
    if (!shown(e) || e.tagName === "INPUT" || e.tagName === "TEXTAREA" || e.tagName === "SELECT") return false;
    const ox = getComputedStyle(e).overflowX;
    return (e === root || ox === "auto" || ox === "scroll") && e.scrollWidth > e.clientWidth + 1;
  });
  scrollers.forEach((e) => add("hscroll", `${e.tagName.toLowerCase()}.${[...e.classList].slice(0, 3).join(".")} scrolls ${e.scrollWidth - e.clientWidth} px`));
  const canvas = document.createElement("canvas").getContext("2d");
  root.querySelectorAll("select, input[type=text]").forEach((e) => {
    if (!shown(e)) return;
    const cs = getComputedStyle(e);
    canvas.font = `${cs.fontSize} ${cs.fontFamily}`;
    const text = (e.tagName === "SELECT" ? (e.selectedOptions[0] || {}).text || "" : e.value).replace(/\u00a0/g, " ");
    const room = e.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - (e.tagName === "SELECT" ? 16 : 0);
    if (canvas.measureText(text).width > room + 1) add("truncated", `${e.tagName.toLowerCase()} ${JSON.stringify(text.slice(0, 40))}`);
  });
  stats.width = Math.round(root.getBoundingClientRect().width);
  return { defects, stats };
}
"""


def _notebook(path) -> None:
    write_notebook(path, [SETUP.strip()] + [src for _, src, _ in EXPLORERS])


def _open(lab, page) -> None:
    """Write the notebook (no windowed rendering: every output is laid out), start its kernel, run every cell."""
    _notebook(lab["root"] / NOTEBOOK)
    tracker = lab["root"].parent / "settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True, exist_ok=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    open_in_lab(lab, page, NOTEBOOK)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    for _ in range(len(EXPLORERS) + 1):
        page.keyboard.press("Shift+Enter")
    for i, (name, _, n_figs) in enumerate(EXPLORERS):
        cell = page.locator(".jp-Notebook .jp-Cell").nth(i + 1)
        try:
            page.wait_for_function(
                "([el, n]) => [...el.querySelectorAll('.bqplot.figure svg.svg-figure')].filter(s => s.getBoundingClientRect().width > 0).length >= n",
                arg=[cell.element_handle(), n_figs], timeout=240_000,
            )
        except Exception:
            page.screenshot(path=str(OUT / "failed.png"), full_page=True)
            raise AssertionError(f"{name} did not render its {n_figs} figures: " + cell.inner_text()[-2000:])
    page.wait_for_timeout(1500)


def _output(page, i: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(i + 1).locator(".jp-OutputArea-output").first


def _set_theme(page, theme: str) -> None:
    want = "true" if theme == "light" else "false"
    if page.evaluate("document.body.dataset.jpThemeLight") == want:
        return
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text="JupyterLab Dark" if theme == "dark" else "JupyterLab Light").first.click()
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{want}'", timeout=30_000)
    page.keyboard.press("Escape")
    page.wait_for_timeout(1500)


def _select(output, option_prefix: str) -> None:
    """Choose the option starting with ``option_prefix`` in the output's dropdown that has it (as a user does)."""
    ok = output.evaluate(
        """(root, prefix) => {
          for (const s of root.querySelectorAll('select')) {
            const i = [...s.options].findIndex(o => o.text.replace(/\u00a0/g, ' ').startsWith(prefix));
            if (i >= 0) { s.selectedIndex = i; s.dispatchEvent(new Event('change', {bubbles: true})); return true; }
          }
          return false;
        }""",
        option_prefix,
    )
    assert ok, f"no dropdown option starting with {option_prefix!r}"


def _change_controls(page) -> None:
    """One control change per explorer, in the browser: the kernel recomputes and the marks update in place."""
    names = [n for n, _, _ in EXPLORERS]
    _select(_output(page, names.index("000-projection")), "after layer 1")
    _select(_output(page, names.index("000-compare")), "‖resid‖₂")
    for name in ("001-logit-diff-one", "001-logit-diff"):
        _output(page, names.index(name)).locator("button", has_text="per prompt").click()
    _select(_output(page, names.index("004-contributions")), "2:")
    lens_kl = _output(page, names.index("005-lens-kl"))
    lens_kl.locator("label", has_text="log KL axis").click()  # the KL chart's marks move to a log scale in place
    _select(lens_kl, "top-1 agreement")
    _select(_output(page, names.index("005-compare-lenses")), "lens entropy")
    page.wait_for_timeout(3000)


def _measure(page, tag: str, results: dict) -> None:
    page.mouse.move(0, 0)  # no tooltip left open in the screenshots
    for i, (name, _, n_figs) in enumerate(EXPLORERS):
        out = _output(page, i)
        # as a reader scrolls to it: bqplot lays a figure out (to its new width) only once it is on screen
        for block in ("end", "start"):
            out.evaluate(f"e => e.scrollIntoView({{block: '{block}'}})")
            page.wait_for_timeout(700)
        got = out.evaluate(MEASURE_JS)
        s = got["stats"]
        # the checks measured something real (no vacuous pass)
        assert s["figures"] >= n_figs and s["texts"] >= 10 * n_figs and s["marks"] > 0, (name, tag, s)
        results.setdefault(name, {})[tag] = got
        out.screenshot(path=str(OUT / f"{name}-{tag}.png"))


def test_explorers_geometry(lab, chromium_browser):  # noqa: F811
    OUT.mkdir(parents=True, exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": WINDOWS["950"], "height": HEIGHT})
    page = context.new_page()
    results: dict = {}
    try:
        _open(lab, page)
        _measure(page, "950-light-initial", results)
        _change_controls(page)
        for theme in THEMES:
            _set_theme(page, theme)
            for width, window in WINDOWS.items():
                page.set_viewport_size({"width": window, "height": HEIGHT})
                page.wait_for_timeout(1500)
                _measure(page, f"{width}-{theme}", results)
        # the control-changed views stay measured (markers after an update)
        assert results["000-compare"]["950-light"]["stats"]["markers"] > 0
    finally:
        (OUT / "defects.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))
        context.close()
    summary = {
        name: {tag: len(r["defects"]) for tag, r in per.items()} for name, per in results.items()
    }
    bad = {
        name: {tag: r["defects"][:8] for tag, r in per.items() if r["defects"]} for name, per in results.items()
    }
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, "defects per explorer and configuration:\n" + json.dumps(summary, indent=1) + "\n" + json.dumps(
        bad, indent=1, ensure_ascii=False
    )
