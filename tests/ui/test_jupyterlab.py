"""End to end: JupyterLab 4 in Debian's Chromium, the widget on the embedded demo model.

The test starts its own JupyterLab on 127.0.0.1 (temporary root, settings and runtime dirs), opens a
notebook, runs the cell that shows the widget, and checks the page against the kernel's own
``w.analysis`` (read over a second kernel client attached to the same kernel).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.ui

OUT = ROOT / "test-output"
IMG = "<img src=x onerror=alert(1)>"
PROMPT = f"Mr. and Mrs. {IMG} Bennet"
VISIBLE = str.maketrans({" ": "␣", "\n": "↵", "\t": "⇥"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from resid_widgets import ResidWidget\n"
            f"w = ResidWidget(prompt={PROMPT!r}, device='cpu')\n"
            "w"
        ),
        nbformat.v4.new_code_cell(
            "from resid_widgets import ContributionExplorer\n"
            "c = ContributionExplorer(w.session, ['Mr. and Mrs. Bennet', 'It is a truth universally acknowledged'])\n"
            "c"
        ),
        nbformat.v4.new_code_cell("w  # a second view of the same widget"),
        nbformat.v4.new_code_cell(
            "long_text = w.session.tokenizer.decode(w.session.tokenizer.encode(' '.join(['It is a truth universally acknowledged.'] * 120))[:1002])\n"
            "w_long = ResidWidget(w.session, long_text)\n"
            "w_long"
        ),
        nbformat.v4.new_code_cell(  # streamed: shown after the first stage, filled in block by block
            "from resid_widgets import Session\n"
            "s_stream = Session(device='cpu')\n"
            "s_stream.chunk_elements = 200_000  # ~12 positions per lens block on the demo model\n"
            "long_text = s_stream.tokenizer.decode(s_stream.tokenizer.encode(' '.join(['It is a truth universally acknowledged.'] * 120))[:1023])\n"
            "w_stream = ResidWidget(s_stream, long_text, wait=False)\n"
            "w_stream"
        ),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, frontend_bundle):
    yield from _server("jupyterlab", tmp_path_factory)


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory, frontend_bundle):
    yield from _server("notebook", tmp_path_factory)


def _server(app: str, tmp_path_factory):
    """JupyterLab 4 or Notebook 7 (``python -m <app>``) on 127.0.0.1 with the e2e notebook's kernel running."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Chromium not found at /usr/bin/chromium")
    if not (ROOT / "resid_widgets" / "demo_model" / "model.safetensors").exists():
        pytest.fail("the embedded demo model is missing (resid_widgets/demo_model)")
    base = tmp_path_factory.mktemp(app)
    root, settings, runtime, workspaces = (base / n for n in ("root", "settings", "runtime", "workspaces"))
    for d in (root, settings, runtime, workspaces):
        d.mkdir()
    _notebook(root / "e2e.ipynb")
    notif = settings / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [
        sys.executable, "-m", app, "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--allow-root",
    ]
    if app == "jupyterlab":
        cmd += [
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
    else:
        cmd += [f"--JupyterNotebookApp.user_settings_dir={settings}", f"--JupyterNotebookApp.workspaces_dir={workspaces}"]
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail("JupyterLab exited: " + (base / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start in 60 s")
        # start the notebook's kernel through the REST API, so the page attaches to it (no kernel dialog)
        req = urllib.request.Request(
            f"{url}/api/sessions?token={token}",
            data=json.dumps({"path": "e2e.ipynb", "type": "notebook", "name": "e2e.ipynb", "kernel": {"name": "python3"}}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        urllib.request.urlopen(req, timeout=60).close()
        yield {"url": url, "token": token, "runtime": runtime, "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Kernel:
    """A second client on the notebook's kernel: run Python there and read back JSON."""

    def __init__(self, lab):
        from jupyter_client import BlockingKernelClient

        with urllib.request.urlopen(f"{lab['url']}/api/sessions?token={lab['token']}") as r:
            (session,) = json.load(r)
        kid = session["kernel"]["id"]
        self.client = BlockingKernelClient()
        self.client.load_connection_file(str(lab["runtime"] / f"kernel-{kid}.json"))
        self.client.start_channels()
        self.client.wait_for_ready(timeout=30)

    def eval(self, expr: str):
        out = []
        reply = self.client.execute_interactive(
            f"import json as _j; print(_j.dumps({expr}))",
            timeout=60,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        return json.loads("".join(out))

    def close(self):
        self.client.stop_channels()


def _wait(predicate, timeout=30.0, every=0.2, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def _hover_cell(page, row: int, pos: int, scope=None) -> None:
    scope = scope or page
    canvas = scope.locator(".rw-heatmap-canvas")
    cw = float(canvas.get_attribute("data-cell-width"))
    rh = float(canvas.get_attribute("data-row-height"))
    scope.locator(".rw-heatmap-scroll").evaluate(f"el => el.scrollLeft = {max(0, pos * cw - 100)}")
    scope.locator(".rw-heatmap-overlay").hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})


def _run_first_cell(page, url: str, name: str) -> None:
    """Open the notebook, run its first cell, and wait for the widget's heatmap."""
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-NotebookKernelStatus", timeout=60_000)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")
    select = page.locator(".jp-Dialog button.jp-mod-accept")
    if select.count():  # a kernel picker, should the app still ask
        select.click()
    try:
        page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=120_000)
    except Exception:
        page.screenshot(path=str(OUT / f"{name}-failed.png"), full_page=True)
        raise AssertionError("the widget did not render; browser console:\n" + "\n".join(console[-30:]))


def test_widget_in_jupyterlab(lab, chromium_browser):
    OUT.mkdir(exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs, comm_frames = [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def on_ws(ws):
        ws.on("framesent", lambda payload: comm_frames.append(payload) if "comm_msg" in str(payload) else None)

    page.on("websocket", on_ws)
    _run_first_cell(page, f"{lab['url']}/lab/tree/e2e.ipynb?token={lab['token']}", "jupyterlab")
    kernel = Kernel(lab)
    try:
        R, T = kernel.eval("[w.analysis.n_rows, w.analysis.n_tokens]")
        canvas = page.locator(".rw-heatmap-canvas")
        assert (int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))) == (R, T)

        # hover: the tooltip's top-1 token is Python's top-1 token for that cell
        row, pos = R - 1, T - 1
        expected = kernel.eval(f"w.analysis.top_tokens[{row}, {pos}, 0]")
        _hover_cell(page, row, pos)
        top1 = page.locator(".rw-tooltip .rw-tip-top1")
        top1.wait_for(timeout=10_000)
        assert top1.inner_text().strip() == expected.translate(VISIBLE).strip()
        page.wait_for_selector(".rw-tooltip .rw-topk-item", timeout=15_000)  # lazy details arrived

        # the <img> token is text, never an element, and nothing ran
        strip = page.locator(".rw-strip")
        shown = "".join(page.locator(".rw-strip .rw-chip-tok").all_inner_texts()).replace("␣", " ")
        assert IMG in shown, shown
        assert page.locator(".rw-root img").count() == 0 and not dialogs

        # layer scrubbing: the strip changes, and no widget message reaches the kernel while scrubbing
        page.mouse.move(0, 0)
        before_layer = strip.get_attribute("data-layer")
        before_text = strip.inner_text()
        page.wait_for_timeout(1000)
        comm_frames.clear()
        slider = page.locator(".rw-layer-slider")
        slider.focus()
        for _ in range(R - 1):
            page.keyboard.press("ArrowLeft")
        assert strip.get_attribute("data-layer") != before_layer
        assert strip.inner_text() != before_text
        assert comm_frames == [], "scrubbing sent widget messages to the kernel"
        # ... and the final layer reaches Python once scrubbing has stopped (one debounced write)
        _wait(lambda: kernel.eval("w.layer") == 0, what="w.layer to sync")
        assert len(comm_frames) <= 1
        page.screenshot(path=str(OUT / "jupyterlab.png"), full_page=True)

        # editing the prompt in the widget updates w.prompt and the heatmap's width
        new_prompt = "It is a truth universally acknowledged, that a single man"
        page.locator(".rw-prompt").fill(new_prompt)
        _wait(lambda: kernel.eval("w.prompt") == new_prompt, timeout=60, what="w.prompt to update")
        T2 = kernel.eval("w.analysis.n_tokens")
        _wait(lambda: canvas.get_attribute("data-cols") == str(T2), what="heatmap width to follow the edit")
        assert T2 != T

        # a bad edit shows an error and keeps the view
        page.locator(".rw-prompt").fill("   ")
        page.wait_for_selector(".rw-error", state="visible", timeout=30_000)
        assert "empty" in page.locator(".rw-error").inner_text()
        assert canvas.get_attribute("data-cols") == str(T2)
        assert kernel.eval("w.prompt") == new_prompt
        page.screenshot(path=str(OUT / "jupyterlab-error.png"), full_page=True)

        # a 1,024-token prompt renders, and hover (lazy details) and scrubbing still respond
        kernel.eval(
            "w.set_prompt(w.session.tokenizer.decode(w.session.tokenizer.encode("
            "' '.join(['It is a truth universally acknowledged.'] * 120))[:1023])) and None"
        )
        n_long = kernel.eval("w.analysis.n_tokens")
        assert n_long == 1024
        _wait(lambda: canvas.get_attribute("data-cols") == "1024", timeout=60, what="the 1,024-token heatmap")
        long_row, long_pos = 2, 1000
        _hover_cell(page, long_row, long_pos)
        expected = kernel.eval(f"w.analysis.top_tokens[{long_row}, {long_pos}, 0]")
        page.wait_for_selector(".rw-tooltip .rw-topk-item", timeout=15_000)
        assert page.locator(".rw-tooltip .rw-tip-top1").inner_text().strip() == expected.translate(VISIBLE).strip()
        page.mouse.move(0, 0)
        layer_before = strip.get_attribute("data-layer")
        slider.focus()
        page.keyboard.press("ArrowRight")
        assert strip.get_attribute("data-layer") != layer_before
        page.screenshot(path=str(OUT / "jupyterlab-1024.png"), full_page=True)

        # a bqplot explorer renders in the same page (its JS comes with the bqplot package, offline)
        page.locator(".jp-Cell .jp-InputArea-editor").nth(1).click()
        page.keyboard.press("Shift+Enter")
        _wait(lambda: page.locator(".jp-Cell").nth(1).locator(".bqplot svg").count() >= 3, timeout=60, what="bqplot figures")
        assert kernel.eval("len(c.data()['attn_mean'])") == kernel.eval("w.session.n_layers")
        # the histogram and per-position bars are drawn with real heights, not an empty axis
        bars = page.locator(".jp-Cell").nth(1).locator(".bqplot rect.bar")
        _wait(lambda: bars.count() >= 2 * (30 + 6), timeout=30, what="bqplot bars")
        heights = bars.evaluate_all("els => els.map(e => e.getBBox().height)")
        assert sum(h > 1 for h in heights) >= 10, heights
        page.locator(".jp-Cell").nth(1).screenshot(path=str(OUT / "jupyterlab-contributions.png"))

        # the exported HTML file works from disk with no network request
        html = lab["root"] / "export.html"
        kernel.eval(f"str(w.save_html({str(html)!r}))")
        _exported_file_hovers(chromium_browser, html, kernel)
    finally:
        kernel.close()
        context.close()


def _exported_file_hovers(browser, html: Path, kernel) -> None:
    context = browser.new_context()
    page = context.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html.as_uri())
    page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=30_000)
    R, T = kernel.eval("[w.analysis.n_rows, w.analysis.n_tokens]")
    row, pos = 1, T - 1
    _hover_cell(page, row, pos)
    expected = kernel.eval(f"w.analysis.top_tokens[{row}, {pos}, 0]")
    top1 = page.locator(".rw-tooltip .rw-tip-top1")
    top1.wait_for(timeout=10_000)
    assert top1.inner_text().strip() == expected.translate(VISIBLE).strip()
    page.wait_for_selector(".rw-tooltip .rw-topk-item", timeout=5_000)
    assert page.locator(".rw-static-note").count() == 1
    remote = [u for u in requests if not u.startswith(("file:", "blob:", "data:"))]
    assert remote == [], remote
    page.screenshot(path=str(OUT / "export.png"), full_page=True)
    context.close()


def test_widget_in_notebook7(notebook7, chromium_browser):
    """Notebook 7 renders the same widget: the heatmap's shape and a hover match the kernel's Analysis."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    _run_first_cell(page, f"{notebook7['url']}/notebooks/e2e.ipynb?token={notebook7['token']}", "notebook7")
    kernel = Kernel(notebook7)
    try:
        R, T = kernel.eval("[w.analysis.n_rows, w.analysis.n_tokens]")
        canvas = page.locator(".rw-heatmap-canvas")
        assert (int(canvas.get_attribute("data-rows")), int(canvas.get_attribute("data-cols"))) == (R, T)
        _hover_cell(page, 1, T - 2)
        expected = kernel.eval(f"w.analysis.top_tokens[1, {T - 2}, 0]")
        page.wait_for_selector(".rw-tooltip .rw-topk-item", timeout=15_000)
        assert page.locator(".rw-tooltip .rw-tip-top1").inner_text().strip() == expected.translate(VISIBLE).strip()
        page.screenshot(path=str(OUT / "notebook7.png"), full_page=True)
    finally:
        kernel.close()
        context.close()


# ------------------------------------------------------------------------------------ what a person sees

_VIRIDIS_STOPS = [
    "#440154", "#482475", "#414487", "#355f8d", "#2a788e", "#21918c",
    "#22a884", "#44bf70", "#7ad151", "#bddf26", "#fde725",
]


def _viridis(t: float):
    """matplotlib's viridis at 11 stops, linearly interpolated over 256 entries (as the widget draws it)."""
    rgb = [[int(h[i : i + 2], 16) for i in (1, 3, 5)] for h in _VIRIDIS_STOPS]
    i = int(round(min(1.0, max(0.0, t)) * 255))
    x = i / 255 * (len(rgb) - 1)
    j = min(len(rgb) - 2, int(x))
    f = x - j
    return [round(rgb[j][c] * (1 - f) + rgb[j + 1][c] * f) for c in range(3)]


def _canvas_px(canvas, x: float, y: float):
    return canvas.evaluate(
        """(c, [x, y]) => { const s = c.width / parseFloat(c.style.width);
            const d = c.getContext('2d').getImageData(Math.floor(x * s), Math.floor(y * s), 1, 1).data;
            return [d[0], d[1], d[2], d[3]]; }""",
        [x, y],
    )


def _check_painted(out, kernel, var: str, cells, what: str) -> None:
    """Cells of the view in `out` are painted with the colour of the kernel's top-1 probability (the
    default colour without targets; viridis over 0..1)."""
    canvas = out.locator(".rw-heatmap-canvas")
    cw = float(canvas.get_attribute("data-cell-width"))
    rh = float(canvas.get_attribute("data-row-height"))
    values = kernel.eval(f"[float({var}.analysis.top_probs[r, p, 0]) for r, p in {list(cells)!r}]")
    for (r, p), v in zip(cells, values):
        got = _canvas_px(canvas, p * cw + 2, r * rh + 2)
        assert got[3] == 255, f"{what}: cell ({r}, {p}) is blank: {got}"
        want = _viridis(v)
        assert max(abs(a - b) for a, b in zip(got[:3], want)) <= 4, (what, r, p, got, want)


def _bg(out) -> list[int]:
    """The theme background the heatmap paints grid lines with (--jp-layout-color1), as RGB."""
    return out.locator(".rw-heatmap").evaluate(
        """e => { const c = document.createElement('canvas').getContext('2d');
            c.fillStyle = getComputedStyle(e).getPropertyValue('--jp-layout-color1').trim() || '#fff';
            c.fillRect(0, 0, 1, 1); return Array.from(c.getImageData(0, 0, 1, 1).data).slice(0, 3); }"""
    )


def _check_grid(out, kernel, var: str, row: int, pos: int, what: str) -> None:
    """The horizontal grid line above `row` is the theme background blended half with the cell."""
    canvas = out.locator(".rw-heatmap-canvas")
    cw = float(canvas.get_attribute("data-cell-width"))
    rh = float(canvas.get_attribute("data-row-height"))
    cell = _viridis(kernel.eval(f"float({var}.analysis.top_probs[{row}, {pos}, 0])"))
    bg = _bg(out)
    got = _canvas_px(canvas, pos * cw + cw / 2 + 3, row * rh)  # beside the centred cell text
    want = [0.5 * b + 0.5 * c for b, c in zip(bg, cell)]
    assert max(abs(a - b) for a, b in zip(got[:3], want)) <= 14, (what, got, want, bg)


def _cell_center(out, row: int, pos: int) -> tuple[float, float]:
    canvas = out.locator(".rw-heatmap-canvas")
    cw = float(canvas.get_attribute("data-cell-width"))
    rh = float(canvas.get_attribute("data-row-height"))
    r = _rect(canvas)
    return r["l"] + (pos + 0.5) * cw, r["t"] + (row + 0.5) * rh


def _rect(loc) -> dict:
    return loc.evaluate("e => { const r = e.getBoundingClientRect(); return {l: r.left, t: r.top, r: r.right, b: r.bottom}; }")


def _intersects(a: dict, b: dict) -> bool:
    return a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]


def _set_theme(page, name: str) -> None:
    """Settings menu > Theme > `name`, as a person would switch it."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    page.locator(".lm-Menu-itemLabel", has_text="Theme").first.hover()
    page.locator(".lm-Menu-itemLabel", has_text=name).first.click()
    page.wait_for_selector(f"body[data-jp-theme-name='{name}']", state="attached", timeout=15_000)
    page.wait_for_timeout(1000)  # the theme's stylesheet settles, the widget redraws


def _run_cell(page, i: int) -> None:
    page.locator(".jp-Cell .jp-InputArea-editor").nth(i).click()
    page.keyboard.press("Shift+Enter")


def test_painted_heatmap_theme_tooltip_and_two_views_in_jupyterlab(lab, chromium_browser):
    """Issue 12 items 1-2 and issue 13's tooltip, in JupyterLab 4: pixels after the first render
    (short and 1,003-token prompts), after resizing the page, after switching to JupyterLab Dark
    (grid lines follow); the hover tooltip's geometry; two views of one widget edited alternately."""
    OUT.mkdir(exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    _run_first_cell(page, f"{lab['url']}/lab/tree/e2e.ipynb?token={lab['token']}", "jupyterlab-paint")
    kernel = Kernel(lab)
    try:
        first = page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea-output")
        R, T = kernel.eval("[w.analysis.n_rows, w.analysis.n_tokens]")
        cells = [(0, 0), (R - 1, T - 1), (R // 2, T // 2), (1, 2)]
        page.wait_for_timeout(300)
        _check_painted(first, kernel, "w", cells, "first render")
        _check_grid(first, kernel, "w", 2, 3, "light theme")

        # the 1,003-token widget: 6 px cells whatever the width, blank before the fix
        _run_cell(page, 3)
        third = page.locator(".jp-Cell").nth(3).locator(".jp-OutputArea-output")
        third.locator(".rw-heatmap-canvas[data-cols]").wait_for(timeout=120_000)
        RL, TL = kernel.eval("[w_long.analysis.n_rows, w_long.analysis.n_tokens]")
        assert TL >= 1000
        long_cells = [(0, 1), (RL - 1, 40), (2, 77)]
        page.wait_for_timeout(300)
        _check_painted(third, kernel, "w_long", long_cells, "first render, 1,003 tokens")
        third.screenshot(path=str(OUT / "jupyterlab-long-first-render.png"))

        # resizing the page (and with it the output area) keeps both painted
        for width in (1100, 1500):
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_timeout(500)
            _check_painted(first, kernel, "w", cells, f"after resize to {width}")
            _check_painted(third, kernel, "w_long", long_cells, f"after resize to {width} (1,003 tokens)")
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.wait_for_timeout(500)
        page.locator(".jp-Cell").nth(0).scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "jupyterlab-paint-light.png"))

        # hover near the bottom-right and the top-left: the tooltip stays inside the visible area (the
        # notebook's scroller and the window: test_tooltip_fit.py), off the editor and the toolbar, and the
        # output area gets no scrollbar
        from test_tooltip_fit import MEASURE_JS

        root = first.locator(".rw-root")
        for row, pos in [(R - 1, T - 1), (0, 0), (R - 1, 0)]:
            _hover_cell(page, row, pos, first)
            tip = first.locator(".rw-tooltip")
            tip.locator(".rw-tip-top1").wait_for(timeout=10_000)
            page.wait_for_timeout(200)
            t, r = _rect(tip), root.evaluate(MEASURE_JS)["view"]
            assert r["l"] - 0.5 <= t["l"] and t["r"] <= r["r"] + 0.5 and r["t"] - 0.5 <= t["t"] and t["b"] <= r["b"] + 0.5, (row, pos, t, r)
            assert not _intersects(t, _rect(first.locator(".rw-editor"))), (row, pos)
            assert not _intersects(t, _rect(first.locator(".rw-toolbar"))), (row, pos)
            assert first.evaluate("e => e.scrollHeight <= e.clientHeight + 1 && e.scrollWidth <= e.clientWidth + 1"), "output area scrolls"
            if pos == T - 1:  # at the right edge it flips left of the cell instead of covering it
                x, y = _cell_center(first, row, pos)
                assert t["r"] <= x - 1, (row, pos, t, x)
            if (row, pos) == (R - 1, T - 1):
                page.screenshot(path=str(OUT / "jupyterlab-tooltip.png"))
        page.mouse.move(0, 0)

        # JupyterLab Dark: grid lines take the dark background, cells keep their colours
        _set_theme(page, "JupyterLab Dark")
        assert sum(_bg(first)) < 3 * 80, _bg(first)
        _check_grid(first, kernel, "w", 2, 3, "dark theme")
        _check_painted(first, kernel, "w", cells, "dark theme")
        _check_painted(third, kernel, "w_long", long_cells, "dark theme (1,003 tokens)")
        page.locator(".jp-Cell").nth(0).scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "jupyterlab-paint-dark.png"))
        _set_theme(page, "JupyterLab Light")
        _check_grid(first, kernel, "w", 2, 3, "light again")

        # two views of one widget: type in one, then the other, alternately
        _run_cell(page, 2)
        second = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output")
        second.locator(".rw-heatmap-canvas[data-cols]").wait_for(timeout=60_000)
        views = [first, second]
        texts = ["It is a truth.", "It is a truth universally.", "Mr. Darcy was", "Mr. and Mrs. Bennet had"]
        for i, text in enumerate(texts):
            views[i % 2].locator(".rw-prompt").fill(text)
            _wait(lambda: kernel.eval("w.prompt") == text, timeout=60, what=f"edit {i} from view {i % 2}")
            for v in views:  # both views show the text and are not waiting
                _wait(lambda: v.locator(".rw-prompt").input_value() == text, what="the other view to follow")
        # and quickly, one after the other: the last typed wins
        views[0].locator(".rw-prompt").fill("It was the best of times.")
        views[1].locator(".rw-prompt").fill("It was the worst of times.")
        _wait(lambda: kernel.eval("[w.prompt, w.status]") == ["It was the worst of times.", "idle"], timeout=60, what="the last edit")
        for v in views:
            _wait(lambda: v.locator(".rw-root.rw-busy").count() == 0, timeout=30, what="both views idle")
            _wait(lambda: v.locator(".rw-prompt").input_value() == "It was the worst of times.", what="both views' text")
            assert v.locator(".rw-heatmap-canvas").get_attribute("data-cols") == str(kernel.eval("w.analysis.n_tokens"))
        assert kernel.eval("w.error") == ""
        page.screenshot(path=str(OUT / "jupyterlab-two-views.png"), full_page=True)

        # the exported file: painted on load, after a resize, and in a dark colour scheme
        html = lab["root"] / "export-paint.html"
        kernel.eval(f"str(w.save_html({str(html)!r}))")
        _exported_file_paints(chromium_browser, html, kernel)
    finally:
        kernel.close()
        context.close()


def _exported_file_paints(browser, html: Path, kernel) -> None:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.goto(html.as_uri())
    page.wait_for_selector(".rw-heatmap-canvas[data-cols]", timeout=30_000)
    app = page.locator("#rw-app")
    R, T = kernel.eval("[w.analysis.n_rows, w.analysis.n_tokens]")
    cells = [(0, 0), (R - 1, T - 1), (R // 2, T // 2)]
    page.wait_for_timeout(300)
    _check_painted(app, kernel, "w", cells, "export: first render")
    _check_grid(app, kernel, "w", 2, 3, "export: light")
    page.set_viewport_size({"width": 900, "height": 900})
    page.wait_for_timeout(400)
    _check_painted(app, kernel, "w", cells, "export: after resize")
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(600)
    assert sum(_bg(app)) < 3 * 80, _bg(app)
    _check_grid(app, kernel, "w", 2, 3, "export: dark")
    _check_painted(app, kernel, "w", cells, "export: dark")
    page.screenshot(path=str(OUT / "export-dark.png"), full_page=True)
    context.close()


def test_streamed_first_paint_in_jupyterlab(lab, chromium_browser):
    """Issue 14: ResidWidget(..., wait=False) on a 1,024-token prompt appears after the first stage and
    fills in as the lens blocks arrive. Records the time from running the cell to the first painted cells
    and to the complete view (test-output/first_paint.json; reported, not asserted) and checks the
    final pixels against the kernel's numbers."""
    OUT.mkdir(exist_ok=True)
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    _run_first_cell(page, f"{lab['url']}/lab/tree/e2e.ipynb?token={lab['token']}", "jupyterlab-stream")
    kernel = Kernel(lab)
    try:
        out = page.locator(".jp-Cell").nth(4).locator(".jp-OutputArea-output")
        t0 = time.perf_counter()
        _run_cell(page, 4)
        canvas = out.locator(".rw-heatmap-canvas[data-cols]")
        canvas.wait_for(timeout=120_000)
        first_paint = time.perf_counter() - t0
        grey = """c => { const s = c.width / parseFloat(c.style.width); const ctx = c.getContext('2d');
            const w = +c.dataset.cellWidth, h = +c.dataset.rowHeight, T = +c.dataset.cols; let n = 0;
            for (let p = 0; p < T; p += 7) { const d = ctx.getImageData(Math.floor((p * w + 2) * s), Math.floor(2 * s), 1, 1).data;
              if (Math.max(d[0], d[1], d[2]) - Math.min(d[0], d[1], d[2]) <= 6) n++; } return n; }"""
        at_first = canvas.evaluate(grey)
        _wait(lambda: canvas.evaluate(grey) == 0, timeout=120, every=0.05, what="every lens block painted")
        complete = time.perf_counter() - t0
        assert kernel.eval("[w_stream.wait().analysis.complete, w_stream.status]") == [True, "idle"]
        R, T = kernel.eval("[w_stream.analysis.n_rows, w_stream.analysis.n_tokens]")
        assert T == 1024
        page.wait_for_timeout(300)
        _check_painted(out, kernel, "w_stream", [(0, 5), (R - 1, T - 1), (R // 2, 700), (1, 1000)], "streamed, complete")
        out.screenshot(path=str(OUT / "jupyterlab-streamed.png"))
        result = {
            "tokens": T,
            "first_paint_s": round(first_paint, 3),
            "complete_s": round(complete, 3),
            "grey_row0_samples_at_first_paint": at_first,
            "load_average": list(os.getloadavg()),
        }
        (OUT / "first_paint.json").write_text(json.dumps(result, indent=2))
        print("streamed first paint in JupyterLab:", json.dumps(result))
    finally:
        kernel.close()
        context.close()
