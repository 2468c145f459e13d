"""``TaskVectorExplorer`` (seed 003): last-token task vectors, their cosine similarities and PCA by layer.

Definitions in ``resid_widgets.analyses.task_vectors``: raw vectors are each prompt's residual rows
at its last real token, task vectors are the raw vectors minus their mean over prompts.
"""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import row_name
from resid_widgets.analyses.task_vectors import TaskVectors, compute_task_vectors
from resid_widgets.widgets._charts import prompt_labels, unique
from resid_widgets.widgets._explorer import (
    ROW_LABEL,
    Chart,
    Explorer,
    check_index,
    colors,
    nice_ticks,
    paint,
    rdbu,
    flow_row,
    status_line,
    text_color_on,
    tooltip,
    update,
)
from resid_widgets.widgets.resid import as_session

#: the seed's five tasks and its prompt template
DEFAULT_TASKS = ["minimum", "maximum", "sum", "difference", "product"]
#: the widget's class: its stylesheet lets the pointer through the numbers written on the heatmap cells
CLASS = "rw-task-vectors"
DEFAULT_TEMPLATE = "Answer minimally: Given the numbers {a} and {b} calculate the {task}"


class TaskVectorExplorer(Explorer):
    """Task vectors of labelled prompts: cosine similarity and 2-D PCA per layer, magnitude by layer.

    ``TaskVectorExplorer(session, prompts, labels=[...])`` takes each prompt's residual vector at its last
    real token at every row (row 0 = embeddings, row l+1 = ``blocks.l.hook_resid_post``), subtracts the
    centroid (mean over prompts) and shows

    * per row: the cosine-similarity matrix of the task vectors (``GridHeatMap``; values in the tooltips and
      drawn in the cells) and a 2-D PCA scatter (numpy SVD of the centred vectors) coloured by label;
    * the mean magnitude (L2 norm) of each label's task vectors by row.

    **Switching rows needs no kernel round trip**: one figure pair per row is built up front and put in an
    ``ipywidgets.Stack`` whose ``selected_index`` is ``jslink``-ed to the row slider, so scrubbing works in the
    browser alone (also in a static HTML export). ``set_prompts`` recomputes and updates those figures'
    marks in place.

    Numbers: ``vectors()`` (centred, or ``centred=False`` for the raw vectors) [P, R, d], ``data(row)``,
    ``to_dataframe()`` (one row per prompt × row, with every coordinate).
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: Sequence[str] | None = None,
        labels: Sequence[str] | None = None,
        *,
        row: int | None = None,
        annotate: bool | None = None,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        if prompts is None:
            prompts = [DEFAULT_TEMPLATE.format(a=25, b=9, task=t) for t in DEFAULT_TASKS]
            labels = DEFAULT_TASKS if labels is None else labels
        self._annotate = annotate
        self.status = status_line()
        self._prompts_arg, self._labels_arg = _prompt_list(prompts), labels
        self._compute()
        R = self._tv.n_rows
        # the slider's own readout (a row index) is off: the label beside it names the row ("after layer 2")
        self.row_slider = W.IntSlider(
            value=R - 1 if row is None else check_index("row", row, R, " (0 = embeddings, r = after layer r - 1)"),
            min=0, max=R - 1, description="row", continuous_update=True, readout=False,
        )
        self.row_name = W.Label()
        # the cosines written on the cells cover their centres: they let the pointer through to the cell (its tooltip)
        label_style = W.HTML(f"<style>.{CLASS} text.label {{ pointer-events: none; }}</style>", layout=W.Layout(display="none"))
        self._start(lambda ch: [flow_row(self.row_slider, self.row_name), self.stack, ch["norms"].widget, label_style], compute=False)
        self.add_class(CLASS)
        self.row_slider.observe(lambda c: self._name_row(c["new"]), "value")  # label only; the stack is linked in JS
        self._name_row(self.row_slider.value)

    # ---- public API -----------------------------------------------------------------------------
    @property
    def task_vectors(self) -> TaskVectors:
        return self._tv

    @property
    def figures(self) -> dict[str, Any]:
        return {"heatmaps": list(self.fig_heatmaps), "pca": list(self.fig_pca), "norms": self.fig_norms}

    @property
    def row(self) -> int:
        """The row shown (0 = embeddings, r = after layer r - 1)."""
        return int(self.row_slider.value)

    @row.setter
    def row(self, value: int) -> None:
        self.row_slider.value = check_index("row", value, self._tv.n_rows, " (0 = embeddings, r = after layer r - 1)")

    def vectors(self, *, centred: bool = True) -> np.ndarray:
        """[P, R, d]: task vectors (centred) or the raw last-token residual vectors."""
        return (self._tv.vectors if centred else self._tv.raw).copy()

    def data(self, row: int | None = None) -> dict[str, Any]:
        """Numbers of one row (default: the slider's): ``cosine`` [P, P], ``pca`` [P, 2],
        ``explained_variance`` [2]; and for all rows: ``norms`` [P, R], ``label_norms`` [n_labels, R]."""
        tv = self._tv
        r = self.row_slider.value if row is None else check_index("row", row, tv.n_rows, " (0 = embeddings, r = after layer r - 1)")
        return {
            "row": r,
            "prompts": list(tv.prompts),
            "labels": list(tv.labels),
            "unique_labels": tv.unique_labels,
            "cosine": tv.cosine[r].copy(),
            "pca": tv.pca[r].copy(),
            "explained_variance": tv.explained_variance[r].copy(),
            "norms": tv.norms.copy(),
            "label_norms": tv.label_norms(),
        }

    def to_dataframe(self, *, centred: bool = True):
        """One row per (prompt, residual row): label, norm and the vector's d coordinates ``x0..x{d-1}``."""
        import pandas as pd

        tv = self._tv
        v = tv.vectors if centred else tv.raw
        P, R, d = v.shape
        df = pd.DataFrame(
            {
                "prompt": np.repeat(tv.prompts, R),
                "label": np.repeat(tv.labels, R),
                "row": np.tile(np.arange(R), P),
                "layer": np.tile(np.arange(R), P) - 1,
                "norm": np.linalg.norm(v.reshape(P * R, d), axis=-1),
                "pc1": tv.pca[:, :, 0].T.reshape(-1),
                "pc2": tv.pca[:, :, 1].T.reshape(-1),
            }
        )
        coords = pd.DataFrame(v.reshape(P * R, d), columns=[f"x{i}" for i in range(d)])
        return pd.concat([df, coords], axis=1)

    def set_prompts(self, prompts: Sequence[str], labels: Sequence[str] | None = None) -> None:
        """Recompute for new prompts; every row's figures are updated in place."""
        self._replace(_prompts_arg=_prompt_list(prompts), _labels_arg=labels)

    def _compute(self) -> None:
        self._tv = compute_task_vectors(self.session, self._prompts_arg, self._labels_arg)

    # ---- charts ---------------------------------------------------------------------------------
    def _name_row(self, r: int) -> None:
        self.row_name.value = row_name(int(r))

    def _build(self) -> None:
        R = self._tv.n_rows
        self.fig_heatmaps, self.fig_pca, self._heat, self._heat_text, self._pca_points, self._pairs = [], [], [], [], [], []
        self._heat_charts, self._pca_charts = [], []
        for r in range(R):
            sx, sy = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
            sc = bq.ColorScale(scheme="RdBu", min=-1.0, max=1.0, mid=0.0)
            hc = Chart(
                f"Cosine similarity of task vectors ({row_name(r)})", "", "", x_scale=sx, y_scale=sy, height=380,
                margin=dict(top=8, bottom=80, left=100, right=64), basis="340px",
            )
            heat = bq.GridHeatMap(
                row=["a", "b"], column=["a", "b"], color=np.zeros((2, 2)), scales={"row": sy, "column": sx, "color": sc},
                tooltip=tooltip(["row", "column", "color"], ["prompt", "prompt", "cosine"], ["", "", ".3f"]),
                stroke="transparent",
            )
            text = bq.Label(
                x=["-"], y=["-"], text=[""], scales={"x": sx, "y": sy}, align="middle", default_size=11, colors=["#111111"],
            )
            hc.x_axis.tick_rotate = -40
            hc.x_axis.tick_style = {"text-anchor": "end"}
            hc.x_axis.grid_lines = hc.y_axis.grid_lines = "none"
            cbar = bq.ColorAxis(
                scale=sc, side="right", tick_values=np.array([-1.0, -0.5, 0.0, 0.5, 1.0]),
                tick_format=".1f",
            )
            hc.figure.axes = [hc.x_axis, hc.y_axis, cbar]
            hc.figure.marks = [heat, text]
            pc = Chart(
                f"PCA of task vectors ({row_name(r)})", "PC1", "PC2", height=380, basis="300px",
                tooltip_fields=("PC1", "PC2"), tooltip_format=".3f",
            )
            for axis in (pc.x_axis, pc.y_axis):  # short ticks: long decimals ran together (row 0)
                axis.tick_format = ".3~g"
            points = bq.Scatter(
                x=[0], y=[0], scales=pc.scales, default_size=80, stroke="#222222",
                tooltip=tooltip(["name", "x", "y"], ["prompt", "PC1", "PC2"], ["", ".3f", ".3f"]),
            )
            pc.figure.marks = [points]
            self._heat_charts.append(hc)
            self._pca_charts.append(pc)
            self.fig_heatmaps.append(hc.figure)
            self.fig_pca.append(pc.figure)
            self._heat.append(heat)
            self._heat_text.append(text)
            self._pca_points.append(points)
            self._pairs.append(flow_row(hc.widget, pc.widget))

        self._norms_chart = Chart(
            "Magnitude of task vectors by row (mean per label)", ROW_LABEL, "‖v‖₂", basis="100%",
            tooltip_fields=("row", "‖v‖₂"), rows=True,
        )
        self._charts = {"norms": self._norms_chart}
        self.stack = W.Stack(children=list(self._pairs), selected_index=self.row_slider.value)
        self._link = W.jslink((self.row_slider, "value"), (self.stack, "selected_index"))
        self.fig_norms = self._norms_chart.figure
        self._norm_lines = bq.Lines(x=[0], y=[0], scales=self._norms_chart.scales, stroke_width=2.5)
        self.fig_norms.marks = [self._norm_lines]

    def _draw(self) -> None:
        tv = self._tv
        P, R = tv.norms.shape
        labels = [str(l) for l in tv.labels]
        names = unique(labels)
        label_index = {u: i for i, u in enumerate(tv.unique_labels)}
        label_cols = colors(len(label_index))
        point_colors = [label_cols[label_index[l]] for l in tv.labels]
        annotate = P <= 12 if self._annotate is None else self._annotate
        # one tick per run of equal labels (25 prompts of 5 tasks: 5 ticks), all of them when every label differs
        ticks = [n for i, n in enumerate(names) if i == 0 or labels[i] != labels[i - 1]]
        longest = max(len(t) for t in ticks)
        gi, gj = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
        legend = [(str(u), label_cols[i], "", "dot") for i, u in enumerate(tv.unique_labels)]
        for r in range(R):
            cos = tv.cosine[r].astype(np.float64)
            hc = self._heat_charts[r]
            # one label per run of equal labels: the others are blank (bqplot draws every ordinal tick)
            blank = {n: "" for n in names if n not in ticks}
            hc.x_axis.tick_labels = blank
            hc.y_axis.tick_labels = blank
            hc.figure.fig_margin = dict(top=8, bottom=int(24 + 4.6 * longest), left=int(16 + 6.2 * longest), right=64)
            update(self._heat[r], row=names, column=names, color=cos)
            update(
                self._heat_text[r],
                x=[names[j] for j in gj.ravel()],
                y=[names[i] for i in gi.ravel()],
                text=[f"{c:.2f}" for c in cos.ravel()],
                visible=annotate,
            )
            paint(self._heat_text[r], [text_color_on(rdbu(c)) for c in cos.ravel()])
            ev = tv.explained_variance[r]
            update(
                self._pca_points[r],
                x=tv.pca[r, :, 0].astype(np.float64),
                y=tv.pca[r, :, 1].astype(np.float64),
                names=[f"{n}: {p}" for n, p in zip(names, tv.prompts)],
                display_names=False,
            )
            paint(self._pca_points[r], point_colors)
            pc = self._pca_charts[r]
            for axis, v in ((pc.x_axis, tv.pca[r, :, 0]), (pc.y_axis, tv.pca[r, :, 1])):  # about 5 round ticks
                axis.tick_values = nice_ticks(float(np.min(v)), float(np.max(v)))
            pc.x_axis.label = f"PC1 ({100 * ev[0]:.1f}% of variance)"
            pc.y_axis.label = f"PC2 ({100 * ev[1]:.1f}% of variance)"
            pc.set_legend(legend)
        ln = tv.label_norms()
        rows = np.arange(R)
        nc = self._norms_chart
        nc.set_rows(rows)
        update(self._norm_lines, x=rows, y=ln, colors=label_cols[: len(ln)])
        nc.set_dots(rows, list(ln.astype(np.float64)), [str(u) for u in tv.unique_labels], label_cols[: len(ln)])
        nc.set_legend((str(u), label_cols[i], "solid", "line") for i, u in enumerate(tv.unique_labels))


def _prompt_list(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise TypeError("TaskVectorExplorer compares several prompts: give a list of strings, not one string")
    return prompt_labels(list(prompts))[1]


__all__ = ["TaskVectorExplorer"]
