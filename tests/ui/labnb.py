"""Write a notebook into the JupyterLab test server's root and open it with a running kernel (shared by the
browser tests that run widgets in a real notebook)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Sequence


def write_notebook(path: Path, cells: Sequence[str]) -> None:
    """A python3 notebook of code ``cells`` at ``path``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def open_in_lab(lab: dict, page, name: str, *, app: str = "lab/tree") -> None:
    """Start a kernel session for notebook ``name`` (in ``lab["root"]``), open it in ``page`` and wait until its
    cells and kernel indicator are there (the caller runs the cells). ``app="notebooks"``: Notebook 7's page."""
    req = urllib.request.Request(
        f"{lab['url']}/api/sessions?token={lab['token']}",
        data=json.dumps({"path": name, "type": "notebook", "name": name, "kernel": {"name": "python3"}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=60).close()
    page.goto(f"{lab['url']}/{app}/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle'], .jp-NotebookKernelStatus", timeout=60_000)


def run_first_cell(page, shown: str, *, timeout_ms: int = 180_000) -> None:
    """Run the notebook's first cell (click, Shift+Enter) and wait until ``shown`` (a selector) is visible. If the
    cell has not started after a minute (a busy machine can drop the key while the kernel is still starting), press
    Shift+Enter on it once more; a timeout says what the cell's output area and the kernel show."""
    cell = page.locator(".jp-Notebook .jp-Cell").first
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(shown, timeout=60_000)
        return
    except Exception:  # noqa: BLE001 - retried below, then reported with the page's state
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        if prompt in ("[ ]:", ""):  # never ran: once more
            cell.locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_selector(shown, timeout=max(1_000, timeout_ms - 60_000))
    except Exception as exc:  # noqa: BLE001
        output = cell.locator(".jp-OutputArea").inner_text()[-2000:]
        prompt = cell.locator(".jp-InputPrompt").inner_text().strip()
        raise AssertionError(f"{shown!r} not shown after running the first cell (prompt {prompt!r}); its output: {output!r}") from exc
