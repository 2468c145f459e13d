"""``CompareWidget``: two prompts side by side (or two lenses on one prompt), aligned by layer, for any metric of
``ResidWidget``."""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import row_labels
from resid_widgets.analyses.workflows import METRIC_AXIS_LABELS, METRIC_LABELS, METRICS, compare_metric
from resid_widgets.widgets._charts import prompt_labels
from resid_widgets.widgets.lens_kl import lens_colors
from resid_widgets.widgets._explorer import (
    ROW_LABEL,
    Chart,
    Explorer,
    check_tau,
    dropdown,
    flow_row,
    show_error,
    status_line,
    update,
)
from resid_widgets.widgets.resid import as_session

A_COLOR, B_COLOR, DIFF_COLOR, DIFF_MEAN_COLOR = "#4e79a7", "#f28e2b", "#59a14f", "#b07aa1"
LENS_DIFF_COLOR = "#e15759"  # in lens mode green is the tuned lens's colour: the differences take others
DEFAULT_A, DEFAULT_B = "Mr. and Mrs.", "It was a fine morning."


class CompareWidget(Explorer):
    """Prompt A vs prompt B (or lens A vs lens B on one prompt), per residual row, for one metric.

    ``CompareWidget(session, "prompt A", "prompt B", metric="projection", targets=[answer, counterfactual])``,
    both prompts read with ``lens`` (default the logit lens); or two lenses on one prompt:
    ``CompareWidget(session, "prompt", lenses=("logit", "tuned"))`` (A = the first lens, B = the second; the
    metric defaults to ``kl``, and the prompt box B is hidden).
    Metrics: ``projection``, ``top1_prob``, ``target_rank`` (of the answer), ``logit_diff`` (answer − counterfactual),
    ``resid_norm``, ``attn_norm``, ``mlp_norm`` (the last two at rows 1..R-1: layer l's output reaches row l+1).
    Lens metrics: ``kl`` (KL(model output ‖ lens), nats), ``entropy``, ``final_rank`` (the model's own top-1 under
    the lens). Three charts share the row axis: the value at the last position for A and B, the mean over positions
    (BOS excluded while the toggle is on) for A and B, and the differences B − A; their legends name the prompts
    (or the lenses). Edit a prompt in its box and press Enter to recompute; the metric dropdown re-reads the stored
    analyses (no forward pass).
    Numbers: ``data()`` (numpy), ``to_dataframe()``.
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompt_a: str = DEFAULT_A,
        prompt_b: str | None = None,
        *,
        metric: str | None = None,
        targets: Sequence[str] | None = None,
        lens: Any = "logit",
        lenses: Sequence[Any] | None = None,
        exclude_bos: bool = True,
        tau: float = 0.9,
        top_k: int = 10,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        if lenses is not None:
            lenses = [lenses] if isinstance(lenses, str) else list(lenses)
            if len(lenses) != 2:
                raise ValueError(f"lenses= compares two lenses on one prompt: give two, e.g. ('logit', 'tuned'), not {len(lenses)}")
            if prompt_b is not None:
                raise ValueError("lenses=(A, B) compares two lenses on one prompt: leave prompt_b out")
            self._lenses = lenses
        else:
            self._lenses = [lens, lens]
        self.lens_mode = lenses is not None
        if prompt_b is None:
            prompt_b = prompt_a if self.lens_mode else DEFAULT_B
        if metric is None:
            metric = "kl" if self.lens_mode else "projection"
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        self._targets = list(targets) if targets else []
        self._kw = dict(top_k=int(top_k), tau=check_tau(tau), targets=self._targets or None)
        prompt_a, prompt_b = prompt_labels([prompt_a, prompt_b])[1]
        wide = W.Layout(width="auto")
        self.text_a = W.Text(value=prompt_a, description="A", continuous_update=False, layout=wide)
        self.text_b = W.Text(value=prompt_b, description="B", continuous_update=False, layout=wide)
        if self.lens_mode:
            self.text_a.description = "prompt"
            self.text_b.layout = W.Layout(width="auto", display="none")  # one prompt: B is A's prompt
        # the menu reads as words ("KL(model output ‖ lens), nats"); the identifiers are the values (cw.metric = "kl")
        self.metric_dropdown = dropdown([(METRIC_LABELS[m], m) for m in METRICS], metric, "metric")
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS from means", indent=False)
        self.status = status_line()
        self.a, self.b = self._analyze(prompt_a, prompt_b)
        self._start(
            lambda ch: [
                self.text_a,
                self.text_b,
                flow_row(self.metric_dropdown, self.bos_toggle),
                flow_row(*(c.widget for c in ch.values())),
            ]
        )
        self.text_a.observe(lambda c: c["new"] != self.a.prompt and self._guard(lambda: self.set_prompts(a=c["new"]))(), "value")
        self.text_b.observe(lambda c: c["new"] != self.b.prompt and self._guard(lambda: self.set_prompts(b=c["new"]))(), "value")
        self.metric_dropdown.observe(self._on_metric, "value")
        self.bos_toggle.observe(self._guard(self._refresh), "value")

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
        if self.lens_mode:
            if b is not None and b != (self.a.prompt if a is None else a):
                raise ValueError("this CompareWidget compares two lenses on one prompt: set the prompt with set_prompts(a=...)")
            b = a
        new_a, new_b = prompt_labels([self.a.prompt if a is None else a, self.b.prompt if b is None else b])[1]
        self.a, self.b = self._analyze(new_a, new_b)
        self._refresh()
        for box, value in ((self.text_a, new_a), (self.text_b, new_b)):
            if box.value != value:
                box.value = value

    @property
    def lenses(self) -> tuple[str, str]:
        """The lenses that read A and B (the same one unless ``lenses=`` was given)."""
        return (str(self.a.lens), str(self.b.lens))

    def to_dataframe(self):
        import pandas as pd

        d = self._data
        labels = row_labels(int(d["row"][-1]) + 1)
        return pd.DataFrame({k: d[k] for k in ("row", "a_last", "b_last", "a_mean", "b_mean", "diff_last", "diff_mean")}).assign(
            layer=lambda f: f["row"] - 1, metric=d["metric"], lens_a=d["lens_a"], lens_b=d["lens_b"],
            row_label=lambda f: pd.Categorical([labels[r] for r in f["row"]], categories=labels, ordered=True),
        )

    # ---- computation ----------------------------------------------------------------------------
    def _analyze(self, prompt_a: str, prompt_b: str) -> tuple[Any, Any]:
        if not self.lens_mode:
            return tuple(self.session.analyze_batch([prompt_a, prompt_b], lens=self._lenses[0], **self._kw))
        # one prompt, two lenses: the second analysis reuses the first one's forward pass (the session keeps it)
        return tuple(self.session.analyze(prompt_a, lens=lens, **self._kw) for lens in self._lenses)

    def _metric_values(self, metric: str) -> dict[str, Any]:
        answer = self._targets[0] if len(self._targets) >= 1 else None
        cf = self._targets[1] if len(self._targets) >= 2 else None
        out = compare_metric(self.a, self.b, metric, answer=answer, counterfactual=cf, exclude_bos=self.bos_toggle.value)
        out.update(metric=metric, prompt_a=self.a.prompt, prompt_b=self.b.prompt, lens_a=str(self.a.lens),
                   lens_b=str(self.b.lens), mode="lenses" if self.lens_mode else "prompts")
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

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self._charts = {
            "last": Chart("Last position", ROW_LABEL, "value", tooltip_fields=("row", "value"), rows=True),
            "mean": Chart("Mean over positions", ROW_LABEL, "value", tooltip_fields=("row", "value"), rows=True),
            "diff": Chart("B − A", ROW_LABEL, "difference", tooltip_fields=("row", "B − A"), rows=True),
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
        if self.lens_mode:
            la, lb = f"{d['lens_a']} lens", f"{d['lens_b']} lens"
            if la == lb:
                la, lb = f"{la} (1)", f"{lb} (2)"
        else:
            la, lb = prompt_labels([d["prompt_a"], d["prompt_b"]])[0]
            if d["lens_a"] != "logit":
                la, lb = f"{la} ({d['lens_a']} lens)", f"{lb} ({d['lens_b']} lens)"
        ab = (lens_colors([d["lens_a"], d["lens_b"]]) if self.lens_mode else [A_COLOR, B_COLOR])
        diff = f"{lb} − {la}" if self.lens_mode else "B − A"
        for key, ya, yb, names, cols in (
            ("last", d["a_last"], d["b_last"], (f"A: {la}", f"B: {lb}"), ab),
            ("mean", d["a_mean"], d["b_mean"], (f"A: {la}", f"B: {lb}"), ab),
            ("diff", d["diff_last"], d["diff_mean"], (f"{diff}, last position", f"{diff}, mean over positions"),
             (LENS_DIFF_COLOR if self.lens_mode else DIFF_COLOR, DIFF_MEAN_COLOR)),
        ):
            c = self._charts[key]
            c.set_rows(x)
            update(c.figure.marks[0], x=x, y=np.stack([ya, yb]), colors=list(cols))
            c.set_dots(x, [ya, yb], list(names), list(cols))
            c.set_legend((n, col, "solid", "line") for n, col in zip(names, cols))
        update(self._zero, x=[int(x[0]), int(x[-1])])
        label, axis = METRIC_LABELS[d["metric"]], METRIC_AXIS_LABELS[d["metric"]]
        for key in ("last", "mean", "diff"):
            self._charts[key].y_axis.label = axis if key != "diff" else f"Δ {axis}"
        if self.lens_mode:
            on = prompt_labels(d["prompt_a"])[0][0]
            self._charts["last"].title = f"Last position: {label}, {la} vs {lb} on “{on}”"
            self._charts["mean"].title = f"Mean over positions: {label}, {la} vs {lb} on “{on}”"
            self._charts["diff"].title = f"B − A ({lb} − {la}): {label}"
        else:
            self._charts["last"].title = f"Last position: {label}"
            self._charts["mean"].title = f"Mean over positions: {label}"
            self._charts["diff"].title = f"B − A: {label}"


__all__ = ["CompareWidget"]
