"""Issue 19 items 9 and 10: the PNG export and a narrow output (~800 px), as a person sees them.

The widget is the real one on the demo model, exported with ``save_html`` (the same bundle and payload as in a
notebook, top-k included) and opened from disk in Chromium at a window 820 px wide (the widget ~800 px wide):

* the hover tooltip's top-k column is inside the tooltip (nothing cut off), and the tooltip covers less than
  half of the heatmap in view;
* with the colour set to *target rank* (its target menu appears) the PNG button stays on a line with other
  controls;
* a 1,000-token prompt: the prompt box shows more than 2 lines, and the zoom menu widens the cells (the
  heatmap then scrolls sideways);
* the PNG, decoded in the page: a light background in the dark theme too, the title inside the image, and the
  colour bar under the heatmap (a strip of the colour map's colours).

Screenshots: ``test-output/narrow-*.png`` and the exported ``test-output/export-heatmap-*.png``.
"""

from __future__ import annotations

import base64

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output"
WIDTH = 820


@pytest.fixture(scope="module")
def exports(tmp_path_factory, frontend_bundle):
    from resid_widgets import ResidWidget, Session

    s = Session()
    d = tmp_path_factory.mktemp("narrow")
    w = ResidWidget(s, "Mr. and Mrs. Bennet had five daughters, and the eldest", targets=[" Bennet", " Darcy"], top_k=10)
    short = w.save_html(d / "short.html")
    text = s.tokenizer.decode(s.tokenizer.encode(" ".join(["It is a truth universally acknowledged."] * 120))[:999])
    w.set_prompt(text)
    assert w.analysis.n_tokens == 1000
    long = w.save_html(d / "long.html")
    out = {"short": short, "long": long, "R": w.analysis.n_rows}
    w.close()
    return out


def _open(browser, path, *, dark: bool = False):
    context = browser.new_context(viewport={"width": WIDTH, "height": 1000}, accept_downloads=True,
                                  color_scheme="dark" if dark else "light")
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=30_000)
    page.wait_for_timeout(200)
    return context, page


def _rect(page, selector: str) -> dict:
    return page.locator(selector).first.evaluate("e => { const r = e.getBoundingClientRect(); "
                                                  "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, "
                                                  "width: r.width, height: r.height}; }")


def test_tooltip_fits_and_leaves_the_heatmap_visible(exports, chromium_browser):
    OUT.mkdir(exist_ok=True)
    context, page = _open(chromium_browser, exports["short"])
    try:
        assert 760 <= _rect(page, ".rw-root")["width"] <= 820
        canvas = page.locator(".rw-heatmap-canvas")
        T, R = int(canvas.get_attribute("data-cols")), int(canvas.get_attribute("data-rows"))
        cw, rh = float(canvas.get_attribute("data-cell-width")), float(canvas.get_attribute("data-row-height"))
        for row, pos in ((R - 1, T - 1), (R // 2, T // 2), (1, 0)):
            page.locator(".rw-heatmap-overlay").hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})
            page.wait_for_selector(".rw-tooltip .rw-topk-item", timeout=10_000)
            page.screenshot(path=str(OUT / f"narrow-tooltip-{row}-{pos}.png"))
            tip = _rect(page, ".rw-tooltip")
            probs = page.locator(".rw-tooltip .rw-topk-prob").evaluate_all(
                "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.right, e.scrollWidth - e.clientWidth]; })")
            assert probs, "no top-k probabilities in the tooltip"
            for right, overflow in probs:  # the right-most column of the top-k list is inside the tooltip
                assert right <= tip["right"] - 2 and overflow <= 0, (row, pos, right, tip)
            heat = _rect(page, ".rw-heatmap-scroll")
            ix = max(0.0, min(tip["right"], heat["right"]) - max(tip["left"], heat["left"]))
            iy = max(0.0, min(tip["bottom"], heat["bottom"]) - max(tip["top"], heat["top"]))
            covered = ix * iy / (heat["width"] * heat["height"])
            assert covered < 0.5, f"the tooltip covers {covered:.0%} of the heatmap at ({row}, {pos})"
    finally:
        context.close()


def test_target_rank_keeps_the_png_button_in_line(exports, chromium_browser):
    context, page = _open(chromium_browser, exports["short"])
    try:
        # ◆ (where the final top-1 emerges) is drawn under every colour: its explanation is on screen under each
        for metric in ("projection", "top1_prob", "kl", "target_rank"):
            page.select_option(".rw-metric", metric)
            note = page.locator(".rw-emergence-note")
            assert note.is_visible() and "◆" in note.inner_text(), metric
        page.select_option(".rw-metric", "target_rank")
        page.wait_for_selector(".rw-target-group:not([hidden])")
        page.locator(".rw-toolbar").screenshot(path=str(OUT / "narrow-toolbar-target-rank.png"))
        png, metric = _rect(page, ".rw-png"), _rect(page, ".rw-metric")
        tops = page.locator(".rw-toolbar").locator("select, input, button").evaluate_all(
            "els => els.filter(e => e.getClientRects().length).map(e => Math.round(e.getBoundingClientRect().top))")
        alone = sum(abs(t - png["top"]) < png["height"] / 2 for t in tops) == 1
        assert not alone, f"the PNG button wrapped onto a line of its own (tops {tops}, PNG {png['top']})"
        assert png["top"] < metric["bottom"], (png, metric)
    finally:
        context.close()


def test_long_prompt_zoom_and_prompt_box(exports, chromium_browser):
    context, page = _open(chromium_browser, exports["long"])
    try:
        page.screenshot(path=str(OUT / "narrow-long-fit.png"))
        box = page.locator(".rw-prompt")
        lines = box.evaluate("e => e.clientHeight / parseFloat(getComputedStyle(e).lineHeight)")
        assert lines > 3, f"the prompt box shows {lines:.1f} lines of a 1,000-token prompt"
        canvas = page.locator(".rw-heatmap-canvas")
        fit = float(canvas.get_attribute("data-cell-width"))
        zoom = page.locator(".rw-zoom")
        assert zoom.is_visible()
        zoom.select_option("24")
        page.wait_for_function("() => document.querySelector('.rw-heatmap-canvas').dataset.cellWidth === '24'")
        assert float(canvas.get_attribute("data-cell-width")) == 24 > fit
        scroller = page.locator(".rw-heatmap-scroll")
        sw, cwid = scroller.evaluate("e => [e.scrollWidth, e.clientWidth]")
        assert sw >= 1000 * 24 - 1 > cwid
        scroller.evaluate("e => { e.scrollLeft = e.scrollWidth; }")
        page.wait_for_timeout(200)
        # the token strip follows the scroll: it shows the last positions
        note = page.locator(".rw-strip-range")
        assert note.is_visible() and "of 1000" in note.inner_text() and "999" in note.inner_text(), note.inner_text()
        page.screenshot(path=str(OUT / "narrow-long-zoom24.png"))
        zoom.select_option("fit")
        page.wait_for_function(f"() => document.querySelector('.rw-heatmap-canvas').dataset.cellWidth === '{int(fit)}'")
    finally:
        context.close()


DECODE = """async (b64) => {
  const img = new Image(); img.src = 'data:image/png;base64,' + b64; await img.decode();
  const c = document.createElement('canvas'); c.width = img.width; c.height = img.height;
  const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
  const px = (x, y) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3));
  const rows = [];  // per pixel row: [distinct colours, the row's pixels as a string]
  for (let y = 0; y < img.height; y++) {
    const d = ctx.getImageData(0, y, img.width, 1).data; const seen = new Set();
    for (let x = 0; x < img.width; x++) seen.add((d[4*x] >> 3) + ',' + (d[4*x+1] >> 3) + ',' + (d[4*x+2] >> 3));
    rows.push([seen.size, Array.from(d).join(',')]);
  }
  const right = []; for (let y = 0; y < img.height; y++) right.push(px(img.width - 2, y));
  return {w: img.width, h: img.height, corners: [px(1, 1), px(img.width - 2, 1), px(1, img.height - 2),
          px(img.width - 2, img.height - 2)], rows, right};
}"""


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_png_has_the_colour_bar_title_inside_and_a_light_background(exports, chromium_browser, dark):
    context, page = _open(chromium_browser, exports["short"], dark=dark)
    try:
        with page.expect_download() as info:
            page.locator(".rw-png").click()
        path = info.value.path()
        data = open(path, "rb").read()
        (OUT / f"export-heatmap-{'dark' if dark else 'light'}.png").write_bytes(data)
        im = page.evaluate(DECODE, base64.b64encode(data).decode())
        for c in im["corners"]:
            assert min(c) >= 235, f"background {c} is not light ({'dark' if dark else 'light'} theme)"
        for c in im["right"]:  # nothing (the title) runs into the right edge
            assert min(c) >= 235, c
        # the colour bar: a run of identical pixel rows, each with the colour map's many colours (a heatmap row
        # holds one colour per cell, and its text changes from one pixel row to the next)
        runs, start = [], 0
        for y in range(1, len(im["rows"]) + 1):
            if y == len(im["rows"]) or im["rows"][y][1] != im["rows"][start][1]:
                if im["rows"][start][0] > 40 and y - start >= 4:
                    runs.append((start, y - 1))
                start = y
        assert runs, "no colour bar in the PNG"
        assert runs[-1][0] > im["h"] * 0.4, (runs, im["h"])  # under the heatmap
    finally:
        context.close()
