"""The one layer numbering: how a residual row is named, everywhere (axes, ticks, tooltips, tables, CLI).

Arrays index residual *rows* ``r = 0 .. R-1`` (``R = n_layers + 1``). Row 0 is the embeddings
(``hook_embed`` + ``hook_pos_embed``); row ``r > 0`` is the residual stream after layer ``r - 1``
(TransformerLens's ``blocks.{r-1}.hook_resid_post``). A row is *labelled* by that layer, as
TransformerLens users think of it::

    row     0        1    2    3    4
    label   "embed"  "0"  "1"  "2"  "3"
    name    "embeddings", "after layer 0", ... "after layer 3"

``Analysis.row_labels``, the explorers' axes and tooltips, ``LensKLExplorer``'s table and the CLI's table
all read these functions; the browser receives the labels in the payload (``row_labels``).
"""

from __future__ import annotations

#: the axis title of every chart whose x axis is the residual row
ROW_AXIS = "after layer (embed = embeddings)"


def row_label(r: int) -> str:
    """Short label of row ``r``: ``"embed"`` for row 0, else the layer whose output it is (``str(r - 1)``)."""
    r = int(r)
    if r < 0:
        raise ValueError(f"a residual row is 0 or more, got {r}")
    return "embed" if r == 0 else str(r - 1)


def row_labels(n_rows: int) -> list[str]:
    """``["embed", "0", "1", ...]`` for ``n_rows`` rows."""
    return [row_label(r) for r in range(int(n_rows))]


def row_name(r: int) -> str:
    """Long name of row ``r``: ``"embeddings"`` or ``"after layer {r - 1}"`` (titles, menus, tooltips)."""
    label = row_label(r)
    return "embeddings" if label == "embed" else f"after layer {label}"


__all__ = ["ROW_AXIS", "row_label", "row_labels", "row_name"]
