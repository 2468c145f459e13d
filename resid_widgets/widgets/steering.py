"""``SteeringWidget``: steer along a token's direction and read the lens before | after | difference.

The numbers come from ``Session.analyze(prompt, targets=[token])`` without and with
``resid_widgets.interventions.Steer`` (``h ← h + α v``, or ``h + α · median‖h‖ · v̂`` when norm-matched, on
``blocks.{l}.hook_resid_post``) and ``Session.continue_text``; this module only draws them. The heatmap's
value is the token's lens log-probability ``log p_token`` at every row × position.
"""

from __future__ import annotations

from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import row_name
from resid_widgets.interventions import Steer, jacobian_direction, unembed_direction
from resid_widgets.widgets._explorer import Chart, Explorer, dropdown, flow_row, status_line, tooltip, update
from resid_widgets.widgets.resid import as_session

SOURCES = {"unembedding W_U[:, t]": "unembed", "Jacobian lens J_rᵀ W_U[:, t]": "jacobian"}
VIEWS = ("before", "after", "difference")
NORM_NOTE = {False: "adds α·v", True: "adds α·median‖h‖·v̂ (norm-matched)"}


def parse_positions(text: str) -> list[int] | None:
    """``"all"`` / empty -> None (every position); ``"0, 3, -1"`` -> [0, 3, -1]."""
    text = str(text).strip()
    if text in ("", "all"):
        return None
    try:
        return [int(p) for p in text.replace(";", ",").split(",") if p.strip()]
    except ValueError:
        raise ValueError(f"positions must be 'all' or integers separated by commas, not {text!r}") from None


class SteeringWidget(Explorer):
    """Steer the residual stream along a token's direction and compare the lens before and after.

    Controls: the token and where its direction comes from (its unembedding column or its Jacobian-lens
    vector at the first steered layer), the layers, the positions (``all`` or ``0, 3, -1``), α and the norm
    mode, steering on / off, the view (before | after | difference of ``log p_token``), and the number of
    greedy tokens continued before and after (side by side, plain text). Errors show in the status line and
    the last picture stays. ``before`` / ``after`` are the two ``Analysis`` objects.
    """

    def __init__(self, model_or_session: Any = None, prompt: str | None = None, token: str | None = None, *,
                 layers: tuple[int, ...] | None = None, alpha: float = 0.5, norm_match: bool = True, n_new: int = 12,
                 device: str | None = None):
        self.session = s = as_session(model_or_session, device=device)
        L = s.n_layers
        self.prompt_box = W.Text("It was a fine morning, and" if prompt is None else prompt, description="prompt",
                                 continuous_update=False, layout=W.Layout(flex="1 1 360px", min_width="200px"))
        self.token_box = W.Text(" Weston" if token is None else token, description="token", continuous_update=False,
                                layout=W.Layout(width="220px"))
        self.source = dropdown(list(SOURCES), list(SOURCES)[0], "direction")
        self.layers_box = W.SelectMultiple(options=list(range(L)), value=tuple(layers or (L // 2,)), description="layers",
                                           rows=min(L, 6), layout=W.Layout(width="170px"))
        self.positions_box = W.Text("all", description="positions", continuous_update=False, layout=W.Layout(width="220px"))
        self.alpha = W.FloatSlider(value=alpha, min=-4.0, max=4.0, step=0.05, description="α", continuous_update=False)
        self.norm_match = W.Checkbox(value=norm_match, description=NORM_NOTE[norm_match], indent=False)
        self.on = W.ToggleButton(value=True, description="steering on", icon="check")
        self.view = W.ToggleButtons(options=VIEWS, value="difference", description="view")
        self.n_new = W.IntSlider(value=n_new, min=0, max=40, description="continue", continuous_update=False)
        ta = dict(disabled=True, layout=W.Layout(flex="1 1 300px", min_width="200px", height="5em"))
        self.before_text, self.after_text = W.Textarea(description="before", **ta), W.Textarea(description="after", **ta)
        self.status = status_line()
        self.before = self.after = None
        self._plain: tuple | None = None  # (key, the plain analysis, its continuation)
        self._build()
        for w in (self.prompt_box, self.token_box, self.source, self.layers_box, self.positions_box, self.alpha,
                  self.norm_match, self.on, self.n_new):
            w.observe(self._guard(self.run), "value")
        self.view.observe(self._guard(self._draw), "value")
        self._init_layout([
            flow_row(self.prompt_box, self.token_box, self.source),
            flow_row(self.layers_box, W.VBox([self.positions_box, self.alpha, self.norm_match, self.on])),
            self.view, self.chart.widget, self.n_new, flow_row(self.before_text, self.after_text),
        ])
        self._guard(self.run)()

    # ---- computation ----------------------------------------------------------------------------
    def intervention(self) -> Steer | None:
        """The ``Steer`` the controls describe (None when steering is off)."""
        self.norm_match.description = NORM_NOTE[bool(self.norm_match.value)]
        if not self.on.value:
            return None
        layers = sorted(self.layers_box.value)
        if not layers:
            raise ValueError("choose at least one layer to steer at")
        token = self.token_box.value
        if SOURCES[self.source.value] == "jacobian":
            v = jacobian_direction(self.session, token, layers[0])
        else:
            v = unembed_direction(self.session, token)
        return Steer(v, layers, float(self.alpha.value), positions=parse_positions(self.positions_box.value),
                     norm_match=bool(self.norm_match.value))

    def run(self) -> None:
        """Recompute before and after (and the continuations); on bad input raise, keeping the last picture."""
        iv = self.intervention()
        prompt, token, n = self.prompt_box.value, self.token_box.value, int(self.n_new.value)
        key = (prompt, token, n, self.session._params_key())
        if self._plain is None or self._plain[0] != key:  # moving alpha or the layers: the plain run is kept
            self._plain = (key, self.session.analyze(prompt, targets=[token], top_k=5), self.session.continue_text(prompt, n).text)
        _, before, before_text = self._plain
        after = before if iv is None else self.session.analyze(prompt, targets=[token], top_k=5, intervention=iv)
        after_text = before_text if iv is None else self.session.continue_text(prompt, n, intervention=iv).text
        self.before, self.after = before, after
        self.before_text.value, self.after_text.value = before_text, after_text
        self._draw()

    def data(self) -> dict[str, Any]:
        """``log p_token`` [R, T] before and after, their difference, the row names and tokens."""
        if self.before is None:
            return {}
        b = np.log(self.before.target_probs[..., 0].astype(np.float64))
        a = np.log(self.after.target_probs[..., 0].astype(np.float64))
        return {"before": b, "after": a, "difference": a - b, "rows": [row_name(r) for r in range(self.before.n_layers + 1)],
                "tokens": list(self.before.tokens), "token": self.before.targets[0],
                "intervention": self.after.info.get("intervention")}

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        sx, sy = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
        self.color_scale = bq.ColorScale(scheme="viridis")
        c = self.chart = Chart("", "position: token", "", x_scale=sx, y_scale=sy, height=300, basis="100%",
                               margin=dict(top=8, bottom=100, left=110, right=70))
        self.heat = bq.GridHeatMap(
            row=["a", "b"], column=["a", "b"], color=np.zeros((2, 2)), scales={"row": sy, "column": sx, "color": self.color_scale},
            tooltip=tooltip(["row", "column", "color"], ["row", "position: token", "value"], ["", "", ".3f"]), stroke="transparent",
        )
        c.x_axis.tick_rotate = -40
        c.x_axis.tick_style = {"text-anchor": "end"}
        c.x_axis.grid_lines = c.y_axis.grid_lines = "none"
        # vertical, 5 ticks: bqplot's default (horizontal) bar in the right margin drew its ticks on top of each other
        cbar = bq.ColorAxis(scale=self.color_scale, side="right", orientation="vertical", tick_format=".2g", num_ticks=5)
        c.figure.axes = [c.x_axis, c.y_axis, cbar]
        c.figure.marks = [self.heat]
        self._charts = {"lens": c}

    def _draw(self) -> None:
        d = self.data()
        if not d:
            return
        view = self.view.value
        values = d[view]
        cols = [f"{p}: {repr(t)[1:-1][:12]}" for p, t in enumerate(d["tokens"])]
        with self.color_scale.hold_sync():
            if view == "difference":
                span = max(1e-6, float(np.abs(values).max()))
                self.color_scale.scheme, self.color_scale.mid = "RdBu", 0.0
                self.color_scale.min, self.color_scale.max = -span, span
            else:  # the plain run's range: α does not move it, so rows the steering cannot reach keep their colours
                lo, hi = float(d["before"].min()), float(d["before"].max())
                self.color_scale.scheme, self.color_scale.mid = "viridis", None
                self.color_scale.min, self.color_scale.max = lo, max(hi, lo + 1e-6)
        update(self.heat, row=d["rows"], column=cols, color=values)
        longest = max(len(s) for s in cols)  # the rotated tick labels' depth: the axis title goes below them
        bottom = int(30 + 4.6 * longest)
        self.chart.figure.fig_margin = dict(top=8, bottom=bottom, left=110, right=70)
        # bqplot's vertical colour bar is the plot area's height less 200 px: a plot area of 330 px gives it 130 px
        # (a shorter one drew the bar a few pixels long, its tick labels on top of each other)
        self.chart.figure.layout.height = self.chart.figure.layout.min_height = f"{8 + bottom + 330}px"
        self.chart.x_axis.label_offset = f"{int(18 + 4.6 * longest)}px"
        what = {"before": "without steering", "after": "steered (on the unsteered colour range)",
                "difference": "steered − without"}[view]
        self.chart.title = f"log p({d['token']!r}) by the lens at every row × position, {what}"


__all__ = ["SteeringWidget", "parse_positions"]
