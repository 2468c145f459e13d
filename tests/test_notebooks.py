"""Every example notebook runs top to bottom, headless, on the embedded demo model (offline)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEMO_WEIGHTS = ROOT / "resid_widgets" / "demo_model" / "model.safetensors"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    if not DEMO_WEIGHTS.exists():
        pytest.skip(f"the demo model is not built yet ({DEMO_WEIGHTS.relative_to(ROOT)} does not exist)")
    import nbformat
    from nbclient import NotebookClient

    # the kernel imports this checkout (also when the package is not installed) and never touches the network
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    book = nbformat.read(path, as_version=4)
    assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in book.cells if c.cell_type == "code"), (
        f"{path.name} is committed with outputs; clear them"
    )
    client = NotebookClient(
        book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}, allow_errors=False
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in book.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
