"""``CompareWidget``: two prompts side by side, aligned by layer, for any metric of ``ResidWidget``."""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.workflows import METRIC_LABELS, METRICS, compare_metric
from resid_widgets.widgets._charts import figure, guarded, row_ticks, show_error, status_line, tooltip, update
from resid_widgets.widgets.resid import as_session

A_COLOR, B_COLOR, DIFF_COLOR = "#4e79a7", "#f28e2b", "#59a14f"
DEFAULT_A, DEFAULT_B = "Mr. and Mrs.", "It was a fine morning."


class CompareWidget(W.VBox):
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
        self.text_a = W.Text(value=prompt_a, description="A", continuous_update=False, layout=W.Layout(width="100%"))
        self.text_b = W.Text(value=prompt_b, description="B", continuous_update=False, layout=W.Layout(width="100%"))
        self.metric_dropdown = W.Dropdown(options=[(f"{m} — {METRIC_LABELS[m]}", m) for m in METRICS], value=metric, description="metric")
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS from means", indent=False)
        self.status = status_line()
        self.a, self.b = self.session.analyze_batch([prompt_a, prompt_b], **self._kw)
        self._compute()
        self._build()
        self._draw()
        self.text_a.observe(lambda c: c["new"] != self.a.prompt and guarded(self.status, lambda: self.set_prompts(a=c["new"])), "value")
        self.text_b.observe(lambda c: c["new"] != self.b.prompt and guarded(self.status, lambda: self.set_prompts(b=c["new"])), "value")
        self.metric_dropdown.observe(self._on_metric, "value")
        self.bos_toggle.observe(lambda _: guarded(self.status, self._refresh), "value")
        wrap = W.Layout(flex_flow="row wrap", width="100%")
        super().__init__(
            children=[
                self.text_a,
                self.text_b,
                W.HBox([self.metric_dropdown, self.bos_toggle], layout=wrap),
                W.HBox([self.fig_last, self.fig_mean, self.fig_diff], layout=wrap),
                self.status,
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
        return {"last": self.fig_last, "mean": self.fig_mean, "diff": self.fig_diff}

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
        tip = tooltip(["name", "x", "y"], ["", "row", "value"], ["", "", ".4g"])
        self.fig_last, s = figure("Last position", "row (0 = embeddings, l+1 = after layer l)", "value", legend=True)
        self._last = bq.Lines(x=[0], y=[0], scales=s, colors=[A_COLOR, B_COLOR], labels=["A", "B"], display_legend=True, marker="circle", marker_size=16)
        self._last_pts = bq.Scatter(x=[0], y=[0], scales=s, default_size=28, tooltip=tip)
        self.fig_last.marks = [self._last, self._last_pts]
        self.fig_mean, s = figure("Mean over positions", "row", "value", legend=True)
        self._mean = bq.Lines(x=[0], y=[0], scales=s, colors=[A_COLOR, B_COLOR], labels=["A", "B"], display_legend=True, marker="circle", marker_size=16)
        self._mean_pts = bq.Scatter(x=[0], y=[0], scales=s, default_size=28, tooltip=tip)
        self.fig_mean.marks = [self._mean, self._mean_pts]
        self.fig_diff, s = figure("B − A", "row", "difference", legend=True)
        self._diff = bq.Lines(
            x=[0], y=[0], scales=s, colors=[DIFF_COLOR, "#b07aa1"], labels=["last position", "mean over positions"],
            display_legend=True, marker="circle", marker_size=16,
        )
        self._zero = bq.Lines(x=[0, 1], y=[0, 0], scales=s, colors=["#888888"], line_style="dotted")
        self._diff_pts = bq.Scatter(x=[0], y=[0], scales=s, default_size=28, tooltip=tip)
        self.fig_diff.marks = [self._diff, self._zero, self._diff_pts]

    def _draw(self) -> None:
        d = self._data
        x = d["row"]
        for fig in (self.fig_last, self.fig_mean, self.fig_diff):
            row_ticks(fig, x)
        n = len(x)
        for lines, pts, ya, yb, names, cols in (
            (self._last, self._last_pts, d["a_last"], d["b_last"], ("A", "B"), (A_COLOR, B_COLOR)),
            (self._mean, self._mean_pts, d["a_mean"], d["b_mean"], ("A", "B"), (A_COLOR, B_COLOR)),
            (self._diff, self._diff_pts, d["diff_last"], d["diff_mean"], ("B − A, last", "B − A, mean"), (DIFF_COLOR, "#b07aa1")),
        ):
            update(lines, x=x, y=np.stack([ya, yb]))
            update(
                pts,
                x=np.tile(x, 2),
                y=np.concatenate([ya, yb]),
                names=[names[0]] * n + [names[1]] * n,
                colors=[cols[0]] * n + [cols[1]] * n,
                display_names=False,
            )
        update(self._zero, x=[int(x[0]), int(x[-1])])
        label = METRIC_LABELS[d["metric"]]
        for fig in (self.fig_last, self.fig_mean):
            fig.axes[1].label = label
        self.fig_last.title = f"Last position: {label}"
        self.fig_mean.title = f"Mean over positions: {label}"


__all__ = ["CompareWidget"]
