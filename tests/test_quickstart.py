"""Issue 19.5: after *Run All*, quickstart.ipynb's first widget still shows what the text above it describes.

The notebook runs headless (nbclient); then, in the same kernel, the widget displayed by the first code cell
(found by the model id in that cell's output, i.e. the view a person sees) is read back: its prompt, targets,
error banner and analysis must be the first cell's, not a later cell's demonstration.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.ipynb"


@pytest.mark.slow
def test_first_widget_matches_its_text_after_run_all(monkeypatch, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    book = nbformat.read(QUICKSTART, as_version=4)
    intro = book.cells[0].source
    first = next(c for c in book.cells if c.cell_type == "code")
    assert '"Mr. and Mrs."' in first.source and "Mr. and Mrs." in intro and "Bennet" in intro
    # the check: every widget shown by the first code cell, read back after all cells ran
    book.cells.append(nbformat.v4.new_code_cell(
        "import json as _j, ipywidgets as _W\n"
        "_shown = [x for x in _W.Widget.widgets.values() if getattr(x, 'model_id', None) in _IDS]\n"
        "print(_j.dumps([dict(prompt=x.prompt, targets=list(x.targets), error=x.error, analysed=x.analysis.prompt,"
        " status=x.status) for x in _shown]))"
    ))
    client = NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for index, cell in enumerate(book.cells[:-1]):
            client.execute_cell(cell, index)
        ids = [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in first.outputs
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(ids) == 1, first.outputs
        book.cells[-1].source = f"_IDS = {ids!r}\n" + book.cells[-1].source
        last = client.execute_cell(book.cells[-1], len(book.cells) - 1)
    text = "".join(o.get("text", "") for o in last.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")
    (state,) = json.loads(text.strip().splitlines()[-1])
    assert state == {"prompt": "Mr. and Mrs.", "targets": [" Bennet", " Darcy"], "error": "", "analysed": "Mr. and Mrs.",
                     "status": "idle"}, state
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
