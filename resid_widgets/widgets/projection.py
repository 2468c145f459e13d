"""``ProjectionExplorer`` (seed 000): how much of the residual stream lies in W_U's token subspace.

Definitions (README): the thin SVD ``W_U = U S V^T``; energy ``E(k) = sum_{i<=k} S_i^2 / sum S^2``;
``k(tau) = min{k : E(k) >= tau}``; projection ``100 * |U_k^T r|^2 / |r|^2``. Changing tau re-thresholds
the stored cumulative curves (no forward pass); a new prompt costs one batched forward pass.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.rows import row_name
from resid_widgets.analyses.workflows import per_prompt_rows, projection_workflow
from resid_widgets.widgets._charts import prompt_labels
from resid_widgets.widgets._explorer import (
    ROW_LABEL,
    Chart,
    Explorer,
    check_index,
    check_tau,
    colors,
    dropdown,
    int_ticks,
    log_ticks,
    flow_row,
    paint,
    status_line,
    tooltip,
    update,
)
from resid_widgets.widgets.resid import as_session

#: the seed's factual-vs-reasoning pair
DEFAULT_PROMPTS = {"factual": "The capital of France is", "reasoning": "If 5x + 3 = 18, then x equals"}
FINAL = "final"  # the row choice meaning ln_final.hook_normalized (the seed's "final layer")
_CACHE_LIMIT = 256


def _split_markers(text: str) -> list[str]:
    return [m.strip() for m in text.split("|") if m.strip()]


class ProjectionExplorer(Explorer):
    """Token-subspace projection of the residual stream (seed 000), as bqplot charts.

    ``ProjectionExplorer(session, prompts, prompt=..., markers=[...], groups={...})`` shows

    * the singular-value spectrum of W_U and its cumulative energy with a movable tau (slider): k(tau) is shown;
    * projection % by layer row for each of ``prompts`` (a string, list, or ``{label: prompt}``): the mean over
      positions (BOS excluded while "exclude BOS" is on; solid) and the last position (dashed);
    * the concentration index (mean over positions) by layer row;
    * projection % over the positions of ``prompt`` at a chosen row (default: ``ln_final.hook_normalized``), with
      vertical markers at the token containing the first character of each substring in ``markers``;
    * a bar chart of ``groups`` (``{"factual": [...], "reasoning": [...]}``): the mean over each group's prompts of
      the final projection % (at the last position, or the mean over positions), whiskers = ± one standard
      deviation, dots = the prompts.

    Numbers: ``data()`` (numpy arrays), ``tables()`` (DataFrames), ``to_dataframe()`` (by layer).
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: str | Sequence[str] | Mapping[str, str] | None = None,
        *,
        prompt: str | None = None,
        markers: Sequence[str] | Mapping[str, str] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        tau: float = 0.9,
        exclude_bos: bool = True,
        row: int | str = FINAL,
        group_position: str = "last",
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        self._cache: dict[str, Any] = {}
        self._labels, self._prompts = prompt_labels(DEFAULT_PROMPTS if prompts is None else prompts)
        self._prompt = self._prompts[0] if prompt is None else prompt_labels([prompt])[1][0]
        self._markers = markers
        self._groups = self._check_groups(groups)
        R = self.session.n_layers + 1
        if group_position not in ("last", "mean"):
            raise ValueError(f"group_position must be 'last' or 'mean', got {group_position!r}")

        # ---- controls ----
        self.tau_slider = W.FloatSlider(
            value=check_tau(tau), min=0.01, max=1.0, step=0.01, description="τ", continuous_update=False,
            readout_format=".2f",
        )
        self.k_label = W.HTML()
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS from means", indent=False)
        row_options = [(row_name(r), r) for r in range(R)] + [("ln_final output (seed's final layer)", FINAL)]
        self.row_dropdown = dropdown(row_options, self._check_row(row), "row")
        self.prompt_text = W.Textarea(
            value=self._prompt, continuous_update=False, description="prompt", layout=W.Layout(width="auto", height="6em")
        )
        self.markers_text = W.Text(
            value=" | ".join(self._marker_substrings()),
            continuous_update=False,
            description="markers",
            placeholder="Step 1 | Step 2 | Therefore",
            layout=W.Layout(flex="1 1 320px", width="auto"),
        )
        self.group_position = dropdown(
            [("last position", "last"), ("mean over positions", "mean")], group_position, "groups at"
        )
        self.status = status_line()
        self._start(
            lambda ch: [
                flow_row(self.tau_slider, self.k_label, self.bos_toggle),
                flow_row(ch["spectrum"].widget, ch["energy"].widget),
                flow_row(ch["layers"].widget, ch["concentration"].widget),
                self.prompt_text,
                flow_row(self.markers_text, self.row_dropdown),
                ch["positions"].widget,
                self.group_position,
                ch["groups"].widget,
            ]
        )
        for w in (self.tau_slider, self.bos_toggle, self.row_dropdown, self.group_position):
            w.observe(self._guard(self._refresh), "value")
        self.prompt_text.observe(
            lambda c: c["new"] != self._prompt and self._guard(lambda: self.set_prompt(c["new"]))(), "value"
        )
        self.markers_text.observe(lambda c: self._guard(lambda: self.set_markers(_split_markers(c["new"])))(), "value")

    # ---- public API -----------------------------------------------------------------------------
    @property
    def tau(self) -> float:
        return float(self.tau_slider.value)

    @tau.setter
    def tau(self, value: float) -> None:
        self.tau_slider.value = check_tau(value)

    @property
    def row(self) -> int | str:
        """The positions chart's residual row (0 = embeddings, r = after layer r - 1) or ``"final"``."""
        return self.row_dropdown.value

    @row.setter
    def row(self, value: int | str) -> None:
        self.row_dropdown.value = self._check_row(value)

    def set_prompts(self, prompts: str | Sequence[str] | Mapping[str, str]) -> None:
        """Replace the prompts compared by layer (one batched forward pass for the new ones)."""
        labels, plist = prompt_labels(prompts)
        self._replace(_labels=labels, _prompts=plist)

    def set_prompt(self, prompt: str, markers: Sequence[str] | Mapping[str, str] | None = None) -> None:
        """Replace the prompt of the positions chart (and optionally its markers)."""
        prompt = prompt_labels([prompt])[1][0]
        self._replace(_prompt=prompt, _markers=self._markers if markers is None else markers)
        if self.prompt_text.value != prompt:
            self.prompt_text.value = prompt

    def set_markers(self, markers: Sequence[str] | Mapping[str, str] | None) -> None:
        self._replace(_markers=markers)

    def set_groups(self, groups: Mapping[str, Sequence[str]]) -> None:
        self._replace(_groups=self._check_groups(groups))

    def tables(self) -> dict[str, Any]:
        """The numbers as DataFrames: spectrum, layers, positions, markers, groups."""
        import pandas as pd

        d = self._data
        m = len(d["singular_values"])
        spectrum = pd.DataFrame(
            {"k": np.arange(1, m + 1), "singular_value": d["singular_values"], "cumulative_energy": d["cumulative_energy"]}
        )
        positions = pd.DataFrame(
            {"pos": np.arange(len(d["position_pct"])), "token": d["position_tokens"], "is_bos": d["position_is_bos"],
             "projection_pct": d["position_pct"]}
        )
        groups = d["groups"].copy()
        return {
            "spectrum": spectrum,
            "layers": self.to_dataframe(),
            "positions": positions,
            "markers": d["markers"].copy(),
            "groups": groups,
        }

    def to_dataframe(self):
        """Long format by layer: one row per (prompt, row)."""
        d = self._data
        return per_prompt_rows(
            d["labels"],
            d["prompts"],
            d["layer_mean"].shape[1],
            mean_pct=d["layer_mean"],
            last_pct=d["layer_last"],
            concentration_mean=d["concentration_mean"],
            tau=d["tau"],
            k=d["k"],
        )

    # ---- computation ----------------------------------------------------------------------------
    def _check_groups(self, groups):
        if groups is None:
            return {label: [p] for label, p in zip(self._labels, self._prompts)}
        out = {str(name): prompt_labels([ps] if isinstance(ps, str) else list(ps))[1] for name, ps in groups.items()}
        empty = [name for name, ps in out.items() if not ps]
        if empty or not out:
            raise ValueError(f"every group needs at least one prompt (empty: {empty})")
        return out

    def _check_row(self, row):
        R = self.session.n_layers + 1
        if isinstance(row, str) and row == FINAL:
            return FINAL
        if isinstance(row, str):
            raise ValueError(f"row must be {FINAL!r} or a row index in [0, {R - 1}] (0 = embeddings), got {row!r}")
        return check_index("row", row, R, f" (0 = embeddings, r = after layer r - 1) or {FINAL!r}")

    def _marker_substrings(self) -> list[str]:
        m = self._markers
        if m is None:
            return []
        return list(m.values()) if isinstance(m, Mapping) else [str(x) for x in m]

    def _analyses(self, prompts: Sequence[str]) -> list:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            if len(self._cache) + len(missing) > _CACHE_LIMIT:
                self._cache.clear()
            for p, a in zip(missing, self.session.analyze_batch(missing, top_k=1)):
                self._cache[p] = a
        return [self._cache[p] for p in prompts]

    def _compute(self) -> None:
        group_prompts = [p for ps in self._groups.values() for p in ps]
        self._analyses(list(self._prompts) + [self._prompt] + group_prompts)  # one batch for everything new
        tok = self.session.tokenizer
        decode = None if tok is None else (lambda ids: tok.decode(ids, clean_up_tokenization_spaces=False))
        self._data = projection_workflow(
            self.session.subspace,
            self._analyses(self._prompts),
            self._analyses([self._prompt])[0],
            {name: self._analyses(ps) for name, ps in self._groups.items()},
            tau=self.tau_slider.value,
            exclude_bos=self.bos_toggle.value,
            row=self.row_dropdown.value,
            group_position=self.group_position.value,
            markers=self._markers,
            decode=decode,
        )
        self._data.update(labels=list(self._labels), prompts=list(self._prompts), position_prompt=self._prompt)

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        red = "#e15759"
        ch = self._charts = {}
        # spectrum of W_U (log y)
        c = ch["spectrum"] = Chart("Singular values of W_U", "index i", "S_i", y_scale=bq.LogScale(), tooltip_fields=("i", "S_i"))
        self._sv_line = bq.Lines(x=[1], y=[1], scales=c.scales, colors=[colors(1)[0]])
        self._sv_k = bq.Lines(x=[1, 1], y=[1, 1], scales=c.scales, colors=[red], line_style="dashed")
        c.figure.marks = [self._sv_line, self._sv_k]

        # cumulative energy with the tau marker
        c = ch["energy"] = Chart("Cumulative energy E(k)", "k (dimensions kept)", "E(k)", y_scale=bq.LinearScale(min=0, max=1))
        self._energy_line = bq.Lines(x=[1], y=[0], scales=c.scales, colors=[colors(1)[0]], stroke_width=2.5)
        self._tau_line = bq.Lines(x=[1, 1], y=[0, 0], scales=c.scales, colors=[red], line_style="dashed")
        self._k_line = bq.Lines(
            x=[1, 1], y=[0, 1], scales=c.scales, colors=[red], line_style="dashed",
            tooltip=tooltip(["x", "y"], ["k(τ)", "E(k)"], ["", ".4f"]),
        )
        c.figure.marks = [self._energy_line, self._tau_line, self._k_line]
        c.set_legend([("E(k)", colors(1)[0], "solid", "line"), ("τ and k(τ)", red, "dashed", "line")])

        # projection by layer row: mean over positions (solid) and last position (dashed)
        c = ch["layers"] = Chart(
            "Projection % by layer", ROW_LABEL, "% in token subspace", y_scale=bq.LinearScale(min=0, max=100),
            tooltip_fields=("row", "%"), rows=True,
        )
        self._layer_mean = bq.Lines(x=[0], y=[0], scales=c.scales, stroke_width=2.5)
        self._layer_last = bq.Lines(x=[0], y=[0], scales=c.scales, stroke_width=2, line_style="dashed")
        c.figure.marks = [self._layer_mean, self._layer_last]

        c = ch["concentration"] = Chart(
            "Concentration index (mean over positions)", ROW_LABEL, "area under projection curve",
            y_scale=bq.LinearScale(min=0, max=1), tooltip_fields=("row", "index"), rows=True,
        )
        self._conc_line = bq.Lines(x=[0], y=[0], scales=c.scales, stroke_width=2.5)
        c.figure.marks = [self._conc_line]

        # projection over positions of one prompt, with markers (labels run up their dashed line)
        c = ch["positions"] = Chart(
            "Projection % over positions", "token position", "% in token subspace",
            y_scale=bq.LinearScale(min=0, max=100), height=300, basis="100%", tooltip_fields=("position", "%"),
        )
        self._pos_line = bq.Lines(x=[0], y=[0], scales=c.scales, colors=[colors(1)[0]], stroke_width=2)
        self._marker_lines = bq.Lines(x=[0, 0], y=[0, 100], scales=c.scales, colors=[red], line_style="dashed")
        self._marker_labels = bq.Label(
            x=[0], y=[3], text=[""], scales=c.scales, colors=[red], x_offset=-4, rotate_angle=-90, align="start",
            font_weight="bold", default_size=12,
        )
        c.figure.marks = [self._pos_line, self._pos_points_placeholder(c), self._marker_lines, self._marker_labels]

        # groups
        c = ch["groups"] = Chart(
            "Final projection % by prompt group (± 1 s.d.)", "group", "% in token subspace",
            x_scale=bq.OrdinalScale(), y_scale=bq.LinearScale(min=0, max=100), height=280, basis="100%",
        )
        self._group_bars = bq.Bars(
            x=["-"], y=[0], scales=c.scales, colors=[colors(1)[0]], opacities=[0.8], padding=0.4,
            tooltip=tooltip(["x", "y"], ["group", "mean %"], ["", ".2f"]),
        )
        self._group_whiskers = bq.Lines(x=[["-", "-"]], y=[[0, 0]], scales=c.scales, colors=["#888888"], stroke_width=2)
        self._group_points = bq.Scatter(
            x=["-"], y=[0], scales=c.scales, default_size=24, colors=["#888888"], stroke="#222222",
            tooltip=tooltip(["name", "y"], ["prompt", "%"], ["", ".2f"]),
        )
        c.figure.marks = [self._group_bars, self._group_whiskers, self._group_points]
        c.set_legend([("mean of the group's prompts", colors(1)[0], "", "bar"), ("one prompt", "#888888", "", "dot")])
        # the figures under their historical names
        self.fig_spectrum, self.fig_energy = ch["spectrum"].figure, ch["energy"].figure
        self.fig_layers, self.fig_concentration = ch["layers"].figure, ch["concentration"].figure
        self.fig_positions, self.fig_groups = ch["positions"].figure, ch["groups"].figure

    def _pos_points_placeholder(self, c: Chart) -> bq.Scatter:
        """The positions' hover points (token text in the tooltip), one colour."""
        self._pos_points = bq.Scatter(
            x=[0], y=[0], scales=c.scales, default_size=20, colors=[colors(1)[0]],
            tooltip=tooltip(["name", "x", "y"], ["token", "position", "%"], ["", "", ".2f"]), display_names=False,
        )
        return self._pos_points

    def _draw(self) -> None:
        d = self._data
        ch = self._charts
        red = "#e15759"
        sv, ce, k = d["singular_values"], d["cumulative_energy"], d["k"]
        m = len(sv)
        idx = np.arange(1, m + 1)
        self.k_label.value = f"<b>k(τ={d['tau']:.2f}) = {k}</b> of {m} dimensions (E(k) = {ce[k - 1]:.3f})"
        lo, hi = float(sv[sv > 0].min()) if (sv > 0).any() else 1e-6, float(sv.max())
        ch["spectrum"].y_axis.tick_values = log_ticks(lo, hi)
        ch["spectrum"].y_axis.tick_format = ",~g"
        update(self._sv_line, x=idx, y=sv)
        ch["spectrum"].set_dots(idx, [sv], ["S_i"], [colors(1)[0]], size=10)
        update(self._sv_k, x=[k, k], y=[lo, hi])
        ch["spectrum"].title = f"Singular values of W_U (k(τ) = {k} dashed)"
        update(self._energy_line, x=idx, y=ce)
        update(self._tau_line, x=[1, m], y=[d["tau"], d["tau"]])
        update(self._k_line, x=[k, k], y=[0.0, float(ce[k - 1])])
        ch["energy"].title = f"Cumulative energy E(k): τ = {d['tau']:.2f} needs k = {k} of {m}"

        P, R = d["layer_mean"].shape
        rows = np.arange(R)
        ch["layers"].set_rows(rows)
        ch["concentration"].set_rows(rows)
        cols = colors(P)
        update(self._layer_mean, x=rows, y=d["layer_mean"], colors=cols)
        update(self._layer_last, x=rows, y=d["layer_last"], colors=cols)
        labels = list(d["labels"])
        ch["layers"].set_dots(
            rows, list(d["layer_mean"]) + list(d["layer_last"]),
            [f"{l} · mean" for l in labels] + [f"{l} · last" for l in labels], cols + cols,
        )
        ch["layers"].set_legend(
            [(f"{l} · mean over positions", c, "solid", "line") for l, c in zip(labels, cols)]
            + [(f"{l} · last position", c, "dashed", "line") for l, c in zip(labels, cols)]
        )
        update(self._conc_line, x=rows, y=d["concentration_mean"], colors=cols)
        ch["concentration"].set_dots(rows, list(d["concentration_mean"]), labels, cols)
        ch["concentration"].set_legend((l, c, "solid", "line") for l, c in zip(labels, cols))

        T = len(d["position_pct"])
        pos = np.arange(T)
        update(self._pos_line, x=pos, y=d["position_pct"])
        update(self._pos_points, x=pos, y=d["position_pct"], names=list(d["position_tokens"]))
        paint(self._pos_points, [colors(1)[0]])
        int_ticks(ch["positions"].x_axis, pos, max_ticks=16)
        found = d["markers"][d["markers"]["pos"] >= 0]
        mx = found["pos"].to_numpy(dtype=np.float64)
        if len(mx):
            update(self._marker_lines, x=np.stack([mx, mx], axis=1), y=np.tile([0.0, 100.0], (len(mx), 1)), visible=True)
            update(self._marker_labels, x=mx, y=np.full(len(mx), 3.0), text=found["name"].tolist(), visible=True)
            paint(self._marker_labels, [red])
        else:
            update(self._marker_lines, visible=False)
            update(self._marker_labels, visible=False)
        r = d["position_row"]
        where = "ln_final output" if r == FINAL else row_name(r)
        ch["positions"].title = f"Projection % over positions ({where})"

        names = d["groups"]["group"].tolist()
        mean, std = d["group_mean"], d["group_std"]
        update(self._group_bars, x=names, y=mean, colors=colors(len(names)))
        update(self._group_whiskers, x=[[n, n] for n in names], y=np.stack([mean - std, mean + std], axis=1))
        gx, gy, gn = [], [], []
        for name, vals in d["group_values"].items():
            gx += [name] * len(vals)
            gy += list(vals)
            gn += list(self._groups[name])
        update(self._group_points, x=gx, y=np.asarray(gy), names=gn, display_names=False)
        paint(self._group_points, ["#888888"])


__all__ = ["ProjectionExplorer", "DEFAULT_PROMPTS"]
