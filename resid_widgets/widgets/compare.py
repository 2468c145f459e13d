"""``CompareWidget``: two prompts side by side, aligned by layer, for any metric of ``ResidWidget``."""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.workflows import METRIC_AXIS_LABELS, METRIC_LABELS, METRICS, compare_metric
from resid_widgets.widgets._charts import prompt_labels
from resid_widgets.widgets._explorer import ROW_LABEL, Chart, Explorer, dropdown, int_ticks, flow_row, show_error, status_line, update
from resid_widgets.widgets.resid import as_session

A_COLOR, B_COLOR, DIFF_COLOR, DIFF_MEAN_COLOR = "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1"
DEFAULT_A, DEFAULT_B = "Mr. and Mrs.", "It was a fine morning."


class CompareWidget(Explorer):
    """Prompt A vs prompt B, per residual row, for one metric.

    ``CompareWidget(session, "prompt A", "prompt B", metric="projection", targets=[answer, counterfactual])``.
    Metrics: ``projection``, ``top1_prob``, ``target_rank`` (of the answer), ``logit_diff`` (answer − counterfactual),
    ``resid_norm``, ``attn_norm``, ``mlp_norm`` (the last two at rows 1..R-1: layer l's output reaches row l+1).
    Three charts share the row axis: the value at the last position for A and B, the mean over positions
    (BOS excluded while the toggle is on) for A and B, and the differences B − A. Edit a prompt in its box and
    press Enter to recompute; the metric dropdown re-reads the stored analyses (no forward pass).
    Numbers: ``data()`` (numpy), ``to_dataframe()``.
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompt_a: str = DEFAULT_A,
        prompt_b: str = DEFAULT_B,
        *,
        metric: str = "projection",
        targets: Sequence[str] | None = None,
        exclude_bos: bool = True,
        tau: float = 0.9,
        top_k: int = 10,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        self._targets = list(targets) if targets else []
        self._kw = dict(top_k=int(top_k), tau=float(tau), targets=self._targets or None)
        wide = W.Layout(width="auto")
        self.text_a = W.Text(value=prompt_a, description="A", continuous_update=False, layout=wide)
        self.text_b = W.Text(value=prompt_b, description="B", continuous_update=False, layout=wide)
        self.metric_dropdown = dropdown([(f"{m} — {METRIC_LABELS[m]}", m) for m in METRICS], metric, "metric")
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS from means", indent=False)
        self.status = status_line()
        self.a, self.b = self.session.analyze_batch([prompt_a, prompt_b], **self._kw)
        self._compute()
        self._build()
        self._draw()
        self.text_a.observe(lambda c: c["new"] != self.a.prompt and self._guard(lambda: self.set_prompts(a=c["new"]))(), "value")
        self.text_b.observe(lambda c: c["new"] != self.b.prompt and self._guard(lambda: self.set_prompts(b=c["new"]))(), "value")
        self.metric_dropdown.observe(self._on_metric, "value")
        self.bos_toggle.observe(self._guard(self._refresh), "value")
        self._init_layout(
            [
                self.text_a,
                self.text_b,
                flow_row(self.metric_dropdown, self.bos_toggle),
                flow_row(*(c.widget for c in self._charts.values())),
            ]
        )

    # ---- public API -----------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        return self.metric_dropdown.value

    @metric.setter
    def metric(self, value: str) -> None:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; choose one of {METRICS}")
        self._metric_values(value)  # raises (e.g. a target metric without targets) before anything changes
        self.metric_dropdown.value = value

    @property
    def figures(self) -> dict[str, bq.Figure]:
        return {name: c.figure for name, c in self._charts.items()}

    @property
    def fig_last(self) -> bq.Figure:
        return self._charts["last"].figure

    @property
    def fig_mean(self) -> bq.Figure:
        return self._charts["mean"].figure

    @property
    def fig_diff(self) -> bq.Figure:
        return self._charts["diff"].figure

    def set_prompts(self, a: str | None = None, b: str | None = None) -> None:
        """Recompute for new prompts (either or both); the charts update in place."""
        new_a = self.a.prompt if a is None else a
        new_b = self.b.prompt if b is None else b
        self.a, self.b = self.session.analyze_batch([new_a, new_b], **self._kw)
        self._refresh()
        for box, value in ((self.text_a, new_a), (self.text_b, new_b)):
            if box.value != value:
                box.value = value

    def data(self) -> dict[str, Any]:
        return dict(self._data)

    def to_dataframe(self):
        import pandas as pd

        d = self._data
        return pd.DataFrame({k: d[k] for k in ("row", "a_last", "b_last", "a_mean", "b_mean", "diff_last", "diff_mean")}).assign(
            layer=lambda f: f["row"] - 1, metric=d["metric"]
        )

    # ---- computation ----------------------------------------------------------------------------
    def _metric_values(self, metric: str) -> dict[str, Any]:
        answer = self._targets[0] if len(self._targets) >= 1 else None
        cf = self._targets[1] if len(self._targets) >= 2 else None
        out = compare_metric(self.a, self.b, metric, answer=answer, counterfactual=cf, exclude_bos=self.bos_toggle.value)
        out.update(metric=metric, prompt_a=self.a.prompt, prompt_b=self.b.prompt)
        return out

    def _compute(self) -> None:
        self._data = self._metric_values(self.metric_dropdown.value)

    def _on_metric(self, change) -> None:
        if getattr(self, "_reverting", False):
            return
        try:
            self._refresh()
        except (ValueError, KeyError) as err:  # e.g. a target metric without targets: back to the old metric
            self._reverting = True
            try:
                self.metric_dropdown.value = change["old"]
            finally:
                self._reverting = False
            show_error(self.status, err)
        else:
            show_error(self.status, None)

    def _refresh(self) -> None:
        self._compute()
        self._draw()

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self._charts = {
            "last": Chart("Last position", ROW_LABEL, "value", tooltip_fields=("row", "value")),
            "mean": Chart("Mean over positions", ROW_LABEL, "value", tooltip_fields=("row", "value")),
            "diff": Chart("B − A", ROW_LABEL, "difference", tooltip_fields=("row", "B − A")),
        }
        for name, cols in (("last", [A_COLOR, B_COLOR]), ("mean", [A_COLOR, B_COLOR]), ("diff", [DIFF_COLOR, DIFF_MEAN_COLOR])):
            c = self._charts[name]
            lines = bq.Lines(x=[0], y=[0], scales=c.scales, colors=cols, stroke_width=2.5)
            c.figure.marks = [lines]
            if name == "diff":
                self._zero = bq.Lines(x=[0, 1], y=[0, 0], scales=c.scales, colors=["#888888"], line_style="dotted")
                c.figure.marks = [lines, self._zero]

    def _draw(self) -> None:
        d = self._data
        x = d["row"]
        la, lb = prompt_labels([d["prompt_a"], d["prompt_b"]])[0]
        for key, ya, yb, names, cols in (
            ("last", d["a_last"], d["b_last"], (f"A: {la}", f"B: {lb}"), (A_COLOR, B_COLOR)),
            ("mean", d["a_mean"], d["b_mean"], (f"A: {la}", f"B: {lb}"), (A_COLOR, B_COLOR)),
            ("diff", d["diff_last"], d["diff_mean"], ("B − A, last position", "B − A, mean over positions"), (DIFF_COLOR, DIFF_MEAN_COLOR)),
        ):
            c = self._charts[key]
            int_ticks(c.x_axis, x)
            update(c.figure.marks[0], x=x, y=np.stack([ya, yb]), colors=list(cols))
            c.set_dots(x, [ya, yb], list(names), list(cols))
            c.set_legend((n, col, "solid", "line") for n, col in zip(names, cols))
        update(self._zero, x=[int(x[0]), int(x[-1])])
        label, axis = METRIC_LABELS[d["metric"]], METRIC_AXIS_LABELS[d["metric"]]
        for key in ("last", "mean", "diff"):
            self._charts[key].y_axis.label = axis if key != "diff" else f"Δ {axis}"
        self._charts["last"].title = f"Last position: {label}"
        self._charts["mean"].title = f"Mean over positions: {label}"
        self._charts["diff"].title = f"B − A: {label}"


__all__ = ["CompareWidget"]
