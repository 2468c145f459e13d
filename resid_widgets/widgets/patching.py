"""``PatchingWidget``: activation patching of the residual stream, from a clean prompt into a corrupted one.

The numbers come from ``resid_widgets.interventions.patching_experiment`` (``score[l, p] = (LD(patched) −
LD(corrupted)) / (LD(clean) − LD(corrupted))`` of ``LD = logit[answer] − logit[counterfactual]`` at the
last position, patching ``blocks.{l}.hook_resid_pre`` at position p); this module only draws them.
"""

from __future__ import annotations

from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import row_name
from resid_widgets.interventions.patching import PatchingResult, patching_experiment
from resid_widgets.widgets._explorer import Chart, Explorer, flow_row, paint, rdbu, status_line, text_color_on, tooltip, update
from resid_widgets.widgets.resid import as_session

DEFAULTS = dict(clean="Mr. Darcy said to Elizabeth", corrupted="Mr. Bennet said to Elizabeth", answer=" Darcy",
                counterfactual=" Bennet")
#: the widget's CSS class (scopes the style that lets hovers through the cells' score labels)
CLASS = "rw-patching"
#: cells annotated with their score up to this many (more would not fit)
ANNOTATE_MAX = 400


def _short(text: str, n: int = 12) -> str:
    text = repr(text)[1:-1]
    return text if len(text) <= n else text[: n - 1] + "…"


def column_labels(result: PatchingResult) -> list[str]:
    """One label per position: ``"p: clean"`` where both runs have the same token, ``"p: clean → corrupted"``
    where they differ (plain text; bqplot escapes it)."""
    out = []
    for p, (a, b) in enumerate(zip(result.clean_tokens, result.corrupted_tokens)):
        out.append(f"{p}: {_short(a)}" if a == b else f"{p}: {_short(a)} → {_short(b)}")
    return out


def row_labels(n_layers: int) -> list[str]:
    """Layer l's input ``blocks.{l}.hook_resid_pre`` is residual row l: ``"embeddings"``, ``"after layer 0"``, ..."""
    return [row_name(l) for l in range(n_layers)]


class PatchingWidget(Explorer):
    """Clean vs corrupted prompt, answer vs counterfactual token, and the patching heatmap (rows = layers,
    columns = positions labelled with both runs' tokens; hover: both tokens and the score, the title: both
    runs' logit differences). ``run()`` (or the button) recomputes; an error is shown under the controls
    and the previous heatmap stays. ``result`` is the last ``PatchingResult``."""

    def __init__(self, model_or_session: Any = None, clean: str | None = None, corrupted: str | None = None,
                 answer: str | None = None, counterfactual: str | None = None, *, device: str | None = None):
        self.session = as_session(model_or_session, device=device)
        given = dict(clean=clean, corrupted=corrupted, answer=answer, counterfactual=counterfactual)
        values = {k: DEFAULTS[k] if v is None else v for k, v in given.items()}
        wide = W.Layout(flex="1 1 320px", min_width="200px")
        self.clean_box = W.Text(values["clean"], description="clean", layout=wide)
        self.corrupted_box = W.Text(values["corrupted"], description="corrupted", layout=wide)
        self.answer_box = W.Text(values["answer"], description="answer", layout=W.Layout(width="220px"))
        self.counterfactual_box = W.Text(values["counterfactual"], description="counterfactual",
                                         style={"description_width": "initial"}, layout=W.Layout(width="240px"))
        self.button = W.Button(description="Patch", button_style="primary", icon="play")
        self.summary = W.HTML()
        # the scores written on the cells cover their centres: they let the pointer through to the cell (its tooltip)
        self._label_style = W.HTML(f"<style>.{CLASS} text.label {{ pointer-events: none; }}</style>",
                                   layout=W.Layout(display="none"))
        self.status = status_line()
        self.result: PatchingResult | None = None
        self._build()
        self.button.on_click(self._guard(self.run))
        for box in (self.clean_box, self.corrupted_box, self.answer_box, self.counterfactual_box):
            box.continuous_update = False  # a box runs the patching when it is committed (Enter, or focus leaves)
            box.observe(self._guard(self.run), "value")
        self._init_layout([
            flow_row(self.clean_box, self.corrupted_box),
            flow_row(self.answer_box, self.counterfactual_box, self.button),
            self.summary,
            self.chart.widget,
            self._label_style,
        ])
        self.add_class(CLASS)
        self._guard(self.run)()  # an error in the initial values shows in the status line

    # ---- public API -----------------------------------------------------------------------------
    @property
    def figure(self) -> bq.Figure:
        return self.chart.figure

    def run(self) -> PatchingResult:
        """Patch with the boxes' values; on bad input raise (the widget shows it) and keep the last heatmap."""
        result = patching_experiment(self.session, self.clean_box.value, self.corrupted_box.value,
                                     _token(self.answer_box.value), _token(self.counterfactual_box.value))
        self.result = result
        self._draw(result)
        return result

    def data(self) -> dict[str, Any]:
        r = self.result
        if r is None:
            return {}
        return {"scores": r.scores.copy(), "patched_ld": r.patched_ld.copy(), "clean_ld": r.clean_ld,
                "corrupted_ld": r.corrupted_ld, "rows": row_labels(r.n_layers), "columns": column_labels(r),
                "clean_tokens": list(r.clean_tokens), "corrupted_tokens": list(r.corrupted_tokens)}

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        sx, sy = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
        self.color_scale = bq.ColorScale(scheme="RdBu", min=-1.0, max=1.0, mid=0.0)
        c = self.chart = Chart("Activation patching", "position: clean → corrupted token", "", x_scale=sx, y_scale=sy,
                               height=340, basis="100%", margin=dict(top=8, bottom=110, left=110, right=70))
        self.heat = bq.GridHeatMap(
            row=["a", "b"], column=["a", "b"], color=np.zeros((2, 2)), scales={"row": sy, "column": sx, "color": self.color_scale},
            tooltip=tooltip(["row", "column", "color"], ["patched", "position: clean → corrupted", "score"], ["", "", ".3f"]),
            stroke="transparent",
        )
        self.text = bq.Label(x=["-"], y=["-"], text=[""], scales={"x": sx, "y": sy}, align="middle", default_size=11,
                             colors=["#111111"])
        c.x_axis.tick_rotate = -40
        c.x_axis.tick_style = {"text-anchor": "end"}
        c.x_axis.grid_lines = c.y_axis.grid_lines = "none"
        self.color_axis = bq.ColorAxis(scale=self.color_scale, side="right", orientation="vertical", tick_format=".1f",
                                       num_ticks=5)
        c.figure.axes = [c.x_axis, c.y_axis, self.color_axis]
        c.figure.marks = [self.heat, self.text]
        self._charts = {"patching": c}

    def _draw(self, r: PatchingResult) -> None:
        rows, cols = row_labels(r.n_layers), column_labels(r)
        scores = r.scores.astype(np.float64)
        span = max(1.0, float(np.abs(scores).max()))
        with self.color_scale.hold_sync():
            self.color_scale.min, self.color_scale.max = -span, span
        update(self.heat, row=rows, column=cols, color=scores)
        L, T = scores.shape
        gi, gj = np.meshgrid(np.arange(L), np.arange(T), indexing="ij")
        update(self.text, x=[cols[j] for j in gj.ravel()], y=[rows[i] for i in gi.ravel()],
               text=[f"{v:.2f}" for v in scores.ravel()], visible=L * T <= ANNOTATE_MAX)
        paint(self.text, [text_color_on(rdbu(v, -span, span)) for v in scores.ravel()])
        longest = max(len(s) for s in cols)
        bottom = int(30 + 4.6 * longest)
        self.chart.figure.fig_margin = dict(top=8, bottom=bottom, left=110, right=70)
        # bqplot's vertical colour bar is the plot area's height less 200 px: a plot area of 330 px gives it 130 px
        # (a shorter one drew the bar a few pixels long, its tick labels on top of each other)
        self.chart.figure.layout.height = self.chart.figure.layout.min_height = f"{8 + bottom + 330}px"
        self.chart.x_axis.label_offset = f"{int(18 + 4.6 * longest)}px"
        self.chart.title = (f"Patching resid_pre from clean into corrupted: logit[{r.answer!r}] − logit[{r.counterfactual!r}] "
                            "restored (1 = clean, 0 = corrupted)")
        self.summary.value = (
            '<span style="color: var(--jp-ui-font-color1)">'
            f"logit difference at the last position: clean {r.clean_ld:.3f}, corrupted {r.corrupted_ld:.3f}; "
            f"{r.n_layers} layers × {T} positions ({r.info.get('method')})</span>"
        )


def _token(text: str) -> str | int:
    """A box's text as a target: the text itself, or a token id when it is ``#123``."""
    text = str(text)
    return int(text[1:]) if text.startswith("#") and text[1:].isdigit() else text


__all__ = ["PatchingWidget", "column_labels", "row_labels"]
