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


def _hover_cell(page, row: int, pos: int) -> None:
    canvas = page.locator(".rw-heatmap-canvas")
    cw = float(canvas.get_attribute("data-cell-width"))
    rh = float(canvas.get_attribute("data-row-height"))
    page.locator(".rw-heatmap-scroll").evaluate(f"el => el.scrollLeft = {max(0, pos * cw - 100)}")
    page.locator(".rw-heatmap-overlay").hover(position={"x": pos * cw + cw / 2, "y": row * rh + rh / 2})


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
