"""``AttributionPanel``: who wrote the pinned cell of a ``ResidWidget``.

It follows the widget's ``selected`` trait (a click on a heatmap cell pins ``[row, position]``) and its prompt and
targets; nothing in the widget or its JavaScript changes. For the pinned cell it shows every writer's direct logit
attribution (``resid_widgets.analyses.attribution``) to the widget's first target minus its second (one target: that
token's logit; none: the logit lens's top-1 at the cell):

* the top writers as a sorted bar chart (positive and negative), hover for the exact value;
* a layer × head grid and a layer × {attention, MLP} strip;
* one writer's attribution at every position (the *writer* menu), same direction.

The attribution reads the logit lens's row (also when the widget shows a Jacobian or tuned lens). It needs the kernel:
it is not part of ``save_html``'s offline file.

``ResidWidget`` now has its own Writers panel in its view (pin a cell, or press ``w`` on the heatmap; see
``resid_writers.py``), which also works in the offline export for the cells computed; this bqplot panel stays as
the notebook-side alternative (same numbers, same direction).
"""

from __future__ import annotations

from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.attribution import check_positions
from resid_widgets.widgets._explorer import Chart, Explorer, dropdown, fit_dropdown, flow_row, guarded, status_line, title_html, update
from resid_widgets.widgets.attribution import bar_chart, draw_bars, top_by_magnitude
from resid_widgets.widgets.resid_writers import cell_direction


class AttributionPanel(Explorer):
    """``AttributionPanel(resid_widget, top_k=12)``: display it below the widget and click (pin) a cell."""

    def __init__(self, widget: Any, *, top_k: int = 12):
        self.widget, self.session, self.top_k = widget, widget.session, int(top_k)
        self._runs: dict[tuple, Any] = {}
        self._atts: dict[tuple, Any] = {}  # (row, target, counterfactual) -> Attribution, for the current run
        self.attribution = None  # the pinned cell's Attribution (every position, same direction)
        self.cell: tuple[int, int] | None = None
        self._drawn: tuple | None = None
        self.status = status_line()
        self.caption = W.HTML(title_html("Click a cell of the lens to pin it: its writers appear here"))
        self.writer_select = dropdown([("-", "-")], "-", "writer at every position")
        self._build()
        self.writer_select.observe(lambda _: guarded(self.status, self._draw_positions), "value")
        # a new analysis (prompt, targets, weights) is published through _meta; refresh skips what is already drawn
        widget.observe(lambda _: guarded(self.status, self.refresh), ["selected", "_meta"])
        ch = self._charts
        self._init_layout(
            [self.caption, flow_row(ch["writers"].widget, ch["heads"].widget, ch["layers"].widget), self.writer_select, ch["positions"].widget]
        )
        guarded(self.status, self.refresh)

    # ---- computation ----------------------------------------------------------------------------
    def _run(self):
        from resid_widgets.session.attribution import AttributionRun

        ids = tuple(int(i) for i in self.widget.analysis.token_ids)
        key = (ids, self.session._params_key())  # a prompt, and weights not edited since
        if key not in self._runs:
            self._runs, self._atts = {key: AttributionRun(self.session, list(ids))}, {}  # one prompt at a time
        return self._runs[key]

    def direction(self, row: int, pos: int) -> tuple[Any, Any, str]:
        """(target, counterfactual, text) from the widget's targets, or the lens top-1 at the cell: the one
        definition, ``resid_writers.cell_direction`` (ResidWidget's own Writers panel uses it too)."""
        return cell_direction(self._run(), self.widget.analysis, row, pos)

    def refresh(self) -> None:
        """Recompute for the widget's pinned cell (nothing pinned: the charts keep what they show)."""
        sel = list(self.widget.selected)
        if len(sel) != 2:
            return
        row, pos = int(sel[0]), int(sel[1])
        run = self._run()
        target, cf, text = self.direction(row, pos)
        key = (row, target, cf)  # of the current run (a new run clears them)
        if key not in self._atts:  # every position: the per-writer view needs them; row checked here
            self._atts = {k: v for k, v in list(self._atts.items())[-7:]}  # a few rows of one prompt
            self._atts[key] = run.dla(target, cf, row=row)
        att = self._atts[key]
        (pos,) = check_positions(pos, len(run.token_ids))
        if self._drawn is not None and self._drawn[0] is att and self._drawn[1] == pos:
            return
        self._drawn = (att, int(pos))
        self.attribution, self.cell = att, (att.row, int(pos))
        token = self.session.token_strings([run.token_ids[pos]])[int(run.token_ids[pos])]
        self.caption.value = title_html(
            f"Row {att.row}, position {pos} ({token!r}): direct logit attribution to {text} "
            f"(pre-cap logits; sum {att.values[:, pos].sum() + att.constant[pos]:.3f} = lens {att.lens_value[pos]:.3f})"
        )
        self._draw()

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        heads = Chart("Heads (blue raises, red lowers)", "head", "layer", x_scale=bq.OrdinalScale(), y_scale=bq.OrdinalScale(reverse=True), basis="240px")
        self._head_color = bq.ColorScale(scheme="RdBu", mid=0.0)
        tip = lambda a, b: bq.Tooltip(fields=["row", "column", "color"], labels=[a, b, "dla"], formats=["", "", ".4f"])  # noqa: E731
        self._heads = bq.GridHeatMap(color=np.zeros((2, 2)), scales={"row": heads.scales["y"], "column": heads.scales["x"], "color": self._head_color}, tooltip=tip("layer", "head"))
        heads.figure.marks = [self._heads]
        layers = Chart("Attention and MLP per layer", "layer", "", x_scale=bq.OrdinalScale(), y_scale=bq.OrdinalScale(), height=140, basis="240px")
        self._layer_color = bq.ColorScale(scheme="RdBu", mid=0.0)
        self._layers = bq.GridHeatMap(color=np.zeros((2, 2)), row=["attn", "MLP"], scales={"row": layers.scales["y"], "column": layers.scales["x"], "color": self._layer_color}, tooltip=tip("", "layer"))
        layers.figure.marks = [self._layers]
        self._charts = {
            "writers": bar_chart("Top writers", "writer", basis="360px"),
            "heads": heads,
            "layers": layers,
            "positions": bar_chart("One writer at every position", "position", basis="600px"),
        }

    def _draw(self) -> None:
        att, (_, pos) = self.attribution, self.cell
        draw_bars(self._charts["writers"], *top_by_magnitude(att.labels, att.values[:, pos], self.top_k))
        grid = att.head_values()[:, :, pos]
        m = float(np.abs(grid).max()) if grid.size else 0.0
        if grid.size:  # row 0 has no heads or layers yet: their charts go blank
            update(self._head_color, min=-(m or 1.0), max=m or 1.0)
            update(self._heads, row=np.arange(grid.shape[0]), column=np.arange(grid.shape[1]), color=grid, visible=True)
        else:
            update(self._heads, visible=False)
        strip = att.layer_values[:, :, pos].T  # [2, row]
        if strip.size:
            s = float(np.abs(strip).max()) or 1.0
            update(self._layer_color, min=-s, max=s)
            update(self._layers, row=["attn", "MLP"], column=np.arange(strip.shape[1]), color=strip, visible=True)
        else:
            update(self._layers, visible=False)
        options = list(att.labels)
        keep = self.writer_select.value if self.writer_select.value in options else top_by_magnitude(att.labels, att.values[:, pos], 1)[0][0]
        if list(self.writer_select.options) != options:
            self.writer_select.options = options  # resets the value to the first option
        self.writer_select.value = keep
        fit_dropdown(self.writer_select)
        self._draw_positions()

    def _draw_positions(self) -> None:
        att = self.attribution
        if att is None or self.writer_select.value not in att.labels:
            return
        w = att.labels.index(self.writer_select.value)
        tokens = self.session.token_strings(att.token_ids)
        labels = [f"{p}:{tokens[int(i)]!r}" for p, i in enumerate(att.token_ids)]
        draw_bars(self._charts["positions"], labels, att.values[w], max_labels=16)
        self._charts["positions"].title = f"{self.writer_select.value} at every position (row {att.row})"


__all__ = ["AttributionPanel"]
