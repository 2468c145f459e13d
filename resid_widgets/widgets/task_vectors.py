"""``TaskVectorExplorer`` (seed 003): last-token task vectors, their cosine similarities and PCA by layer.

Definitions in ``resid_widgets.analyses.task_vectors``: raw vectors are each prompt's residual rows
at its last real token, task vectors are the raw vectors minus their mean over prompts.
"""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.task_vectors import TaskVectors, compute_task_vectors
from resid_widgets.widgets._charts import colors, figure, point_tooltip, row_ticks, status_line, tooltip, unique, update
from resid_widgets.widgets.resid import as_session

#: the seed's five tasks and its prompt template
DEFAULT_TASKS = ["minimum", "maximum", "sum", "difference", "product"]
DEFAULT_TEMPLATE = "Answer minimally: Given the numbers {a} and {b} calculate the {task}"


def _row_name(r: int) -> str:
    return "embeddings" if r == 0 else f"after layer {r - 1}"


class TaskVectorExplorer(W.VBox):
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
        self._tv = compute_task_vectors(self.session, list(prompts), labels)
        R = self._tv.n_rows
        self.row_slider = W.IntSlider(
            value=R - 1 if row is None else int(row) % R, min=0, max=R - 1, description="row",
            continuous_update=True,
        )
        self.row_name = W.Label()
        self._build()
        self._draw()
        self.stack = W.Stack(children=[self._pairs[r] for r in range(R)], selected_index=self.row_slider.value)
        self._link = W.jslink((self.row_slider, "value"), (self.stack, "selected_index"))
        self.row_slider.observe(lambda c: self._name_row(c["new"]), "value")  # label only; the stack is linked in JS
        self._name_row(self.row_slider.value)
        super().__init__(children=[W.HBox([self.row_slider, self.row_name]), self.stack, self.fig_norms, self.status])

    # ---- public API -----------------------------------------------------------------------------
    @property
    def task_vectors(self) -> TaskVectors:
        return self._tv

    @property
    def figures(self) -> dict[str, Any]:
        return {"heatmaps": list(self.fig_heatmaps), "pca": list(self.fig_pca), "norms": self.fig_norms}

    def vectors(self, *, centred: bool = True) -> np.ndarray:
        """[P, R, d]: task vectors (centred) or the raw last-token residual vectors."""
        return (self._tv.vectors if centred else self._tv.raw).copy()

    def data(self, row: int | None = None) -> dict[str, Any]:
        """Numbers of one row (default: the slider's): ``cosine`` [P, P], ``pca`` [P, 2],
        ``explained_variance`` [2]; and for all rows: ``norms`` [P, R], ``label_norms`` [n_labels, R]."""
        r = self.row_slider.value if row is None else int(row) % self._tv.n_rows
        tv = self._tv
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
        self._tv = compute_task_vectors(self.session, list(prompts), labels)
        self._draw()

    # ---- charts ---------------------------------------------------------------------------------
    def _name_row(self, r: int) -> None:
        self.row_name.value = _row_name(int(r))

    def _build(self) -> None:
        R = self._tv.n_rows
        self.fig_heatmaps, self.fig_pca, self._heat, self._heat_text, self._pca_points, self._pairs = [], [], [], [], [], []
        for r in range(R):
            sx, sy = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
            sc = bq.ColorScale(scheme="RdBu", min=-1.0, max=1.0, mid=0.0)
            heat = bq.GridHeatMap(
                row=["a", "b"], column=["a", "b"], color=np.zeros((2, 2)), scales={"row": sy, "column": sx, "color": sc},
                tooltip=tooltip(["row", "column", "color"], ["prompt", "prompt", "cosine"], ["", "", ".3f"]),
                stroke="transparent",
            )
            text = bq.Label(
                x=["-"], y=["-"], text=[""], scales={"x": sx, "y": sy}, align="middle", default_size=11,
                colors=["#222222"],
            )
            fig = bq.Figure(
                title=f"Cosine similarity of task vectors ({_row_name(r)})",
                marks=[heat, text],
                axes=[
                    bq.Axis(scale=sx, tick_rotate=-35, tick_style={"font-size": "10px"}),
                    bq.Axis(scale=sy, side="left", tick_style={"font-size": "10px"}),
                    bq.ColorAxis(scale=sc, side="right"),
                ],
                fig_margin=dict(top=40, bottom=90, left=130, right=60),
                layout=W.Layout(flex="1 1 0", min_width="320px", height="380px"),
            )
            pfig, s = figure(f"PCA of task vectors ({_row_name(r)})", "PC1", "PC2", height="380px")
            points = bq.Scatter(
                x=[0], y=[0], scales=s, default_size=80, stroke="#222222",
                tooltip=tooltip(["name", "x", "y"], ["prompt", "PC1", "PC2"], ["", ".3f", ".3f"]),
            )
            pfig.marks = [points]
            self.fig_heatmaps.append(fig)
            self.fig_pca.append(pfig)
            self._heat.append(heat)
            self._heat_text.append(text)
            self._pca_points.append(points)
            self._pairs.append(W.HBox([fig, pfig], layout=W.Layout(flex_flow="row wrap", width="100%")))

        self.fig_norms, s = figure(
            "Magnitude of task vectors by row (mean per label)", "row (0 = embeddings, l+1 = after layer l)", "‖v‖₂",
            legend=True,
        )
        self._norm_lines = bq.Lines(x=[0], y=[0], scales=s, display_legend=True, marker="circle", marker_size=16)
        self._norm_points = bq.Scatter(x=[0], y=[0], scales=s, default_size=24, tooltip=point_tooltip("row", "‖v‖₂", ".4g"))
        self.fig_norms.marks = [self._norm_lines, self._norm_points]

    def _draw(self) -> None:
        tv = self._tv
        P, R = tv.norms.shape
        names = unique([str(l) for l in tv.labels])
        label_index = {u: i for i, u in enumerate(tv.unique_labels)}
        point_colors = [colors(len(label_index))[label_index[l]] for l in tv.labels]
        annotate = P <= 12 if self._annotate is None else self._annotate
        gi, gj = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
        for r in range(R):
            cos = tv.cosine[r].astype(np.float64)
            update(self._heat[r], row=names, column=names, color=cos)
            update(
                self._heat_text[r],
                x=[names[j] for j in gj.ravel()],
                y=[names[i] for i in gi.ravel()],
                text=[f"{c:.2f}" for c in cos.ravel()],
                visible=annotate,
            )
            ev = tv.explained_variance[r]
            update(
                self._pca_points[r],
                x=tv.pca[r, :, 0].astype(np.float64),
                y=tv.pca[r, :, 1].astype(np.float64),
                names=[f"{n}: {p}" for n, p in zip(names, tv.prompts)],
                display_names=False,
                colors=point_colors,
            )
            self.fig_pca[r].axes[0].label = f"PC1 ({100 * ev[0]:.1f}% of variance)"
            self.fig_pca[r].axes[1].label = f"PC2 ({100 * ev[1]:.1f}% of variance)"
        ln = tv.label_norms()
        rows = np.arange(R)
        row_ticks(self.fig_norms, rows)
        update(self._norm_lines, x=rows, y=ln, colors=colors(len(ln)), labels=tv.unique_labels)
        pts_x = np.tile(rows, len(ln))
        update(
            self._norm_points,
            x=pts_x,
            y=ln.reshape(-1).astype(np.float64),
            names=[u for u in tv.unique_labels for _ in rows],
            colors=[c for c in colors(len(ln)) for _ in rows],
            display_names=False,
        )


__all__ = ["TaskVectorExplorer"]
