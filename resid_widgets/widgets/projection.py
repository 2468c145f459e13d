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

from resid_widgets.analyses.workflows import group_stats, layer_profile, marker_positions, per_prompt_rows
from resid_widgets.widgets._charts import (
    colors,
    figure,
    guarded,
    point_tooltip,
    prompt_labels,
    row_ticks,
    series_points,
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


class ProjectionExplorer(W.VBox):
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
        self._prompt = prompt if prompt is not None else self._prompts[0]
        self._markers = markers
        self._groups = self._check_groups(groups)
        R = self.session.n_layers + 1

        # ---- controls ----
        self.tau_slider = W.FloatSlider(
            value=tau, min=0.05, max=1.0, step=0.01, description="τ", continuous_update=False, readout_format=".2f"
        )
        self.k_label = W.HTML()
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS from means", indent=False)
        row_options = [("embeddings (row 0)", 0)] + [(f"after layer {l} (row {l + 1})", l + 1) for l in range(R - 1)]
        row_options.append(("ln_final output (seed's final layer)", FINAL))
        self.row_dropdown = W.Dropdown(options=row_options, value=self._check_row(row), description="row")
        self.prompt_text = W.Textarea(
            value=self._prompt, continuous_update=False, description="prompt", layout=W.Layout(width="100%", height="6em")
        )
        self.markers_text = W.Text(
            value=" | ".join(self._marker_substrings()),
            continuous_update=False,
            description="markers",
            placeholder="Step 1 | Step 2 | Therefore",
        )
        self.group_position = W.Dropdown(
            options=[("last position", "last"), ("mean over positions", "mean")], value=group_position, description="groups at"
        )
        self.status = status_line()

        self._compute()
        self._build()
        self._draw()

        self.tau_slider.observe(lambda _: guarded(self.status, self._refresh), "value")
        self.bos_toggle.observe(lambda _: guarded(self.status, self._refresh), "value")
        self.row_dropdown.observe(lambda _: guarded(self.status, self._refresh), "value")
        self.group_position.observe(lambda _: guarded(self.status, self._refresh), "value")
        self.prompt_text.observe(
            lambda c: c["new"] != self._prompt and guarded(self.status, lambda: self.set_prompt(c["new"])), "value"
        )
        self.markers_text.observe(
            lambda c: guarded(self.status, lambda: self.set_markers(_split_markers(c["new"]))), "value"
        )

        wrap = W.Layout(flex_flow="row wrap", width="100%")
        super().__init__(
            children=[
                W.HBox([self.tau_slider, self.k_label, self.bos_toggle], layout=wrap),
                W.HBox([self.fig_spectrum, self.fig_energy], layout=wrap),
                W.HBox([self.fig_layers, self.fig_concentration], layout=wrap),
                self.prompt_text,
                W.HBox([self.markers_text, self.row_dropdown], layout=wrap),
                self.fig_positions,
                self.group_position,
                self.fig_groups,
                self.status,
            ]
        )

    # ---- public API -----------------------------------------------------------------------------
    @property
    def tau(self) -> float:
        return float(self.tau_slider.value)

    @tau.setter
    def tau(self, value: float) -> None:
        self.tau_slider.value = float(value)

    @property
    def figures(self) -> dict[str, bq.Figure]:
        return {
            "spectrum": self.fig_spectrum,
            "energy": self.fig_energy,
            "layers": self.fig_layers,
            "concentration": self.fig_concentration,
            "positions": self.fig_positions,
            "groups": self.fig_groups,
        }

    def set_prompts(self, prompts: str | Sequence[str] | Mapping[str, str]) -> None:
        """Replace the prompts compared by layer (one batched forward pass for the new ones)."""
        old = self._labels, self._prompts
        self._labels, self._prompts = prompt_labels(prompts)
        try:
            self._refresh()
        except Exception:
            self._labels, self._prompts = old
            raise

    def set_prompt(self, prompt: str, markers: Sequence[str] | Mapping[str, str] | None = None) -> None:
        """Replace the prompt of the positions chart (and optionally its markers)."""
        old = self._prompt, self._markers
        self._prompt = prompt
        if markers is not None:
            self._markers = markers
        try:
            self._refresh()
        except Exception:
            self._prompt, self._markers = old
            raise
        if self.prompt_text.value != prompt:
            self.prompt_text.value = prompt

    def set_markers(self, markers: Sequence[str] | Mapping[str, str] | None) -> None:
        self._markers = markers
        self._refresh()

    def set_groups(self, groups: Mapping[str, Sequence[str]]) -> None:
        old = self._groups
        self._groups = self._check_groups(groups)
        try:
            self._refresh()
        except Exception:
            self._groups = old
            raise

    def data(self) -> dict[str, Any]:
        """Every plotted number (numpy arrays; ``markers`` is a DataFrame)."""
        return dict(self._data)

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
        out = {str(name): [ps] if isinstance(ps, str) else list(ps) for name, ps in groups.items()}
        empty = [name for name, ps in out.items() if not ps]
        if empty or not out:
            raise ValueError(f"every group needs at least one prompt (empty: {empty})")
        return out

    def _check_row(self, row):
        R = self.session.n_layers + 1
        if row == FINAL:
            return FINAL
        if isinstance(row, (int, np.integer)) and -R <= int(row) < R:
            return int(row) % R
        raise ValueError(f"row must be {FINAL!r} or a row index in [0, {R}), got {row!r}")

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
        tau, bos = self.tau_slider.value, self.bos_toggle.value
        sub = self.session.subspace
        k = sub.k_for_tau(tau)
        group_prompts = [p for ps in self._groups.values() for p in ps]
        self._analyses(list(self._prompts) + [self._prompt] + group_prompts)  # one batch for everything new

        means, lasts, conc, final_last = [], [], [], []
        for a in self._analyses(self._prompts):
            mean, last = layer_profile(a, a.projection_at(tau), exclude_bos=bos)
            c_mean, _ = layer_profile(a, a.concentration_index(), exclude_bos=bos)
            means.append(mean)
            lasts.append(last)
            conc.append(c_mean)
            final_last.append(float(a.projection_final_at(tau)[-1]))

        ap = self._analyses([self._prompt])[0]
        row = self.row_dropdown.value
        pos_pct = ap.projection_final_at(tau) if row == FINAL else ap.projection_at(tau)[row]
        n_skip = 1 if ap.n_tokens and bool(ap.is_bos[0]) else 0
        tok = self.session.tokenizer
        real_ids = ap.token_ids[n_skip:].tolist()
        decode = None if tok is None else (lambda n: tok.decode(real_ids[:n], clean_up_tokenization_spaces=False))
        markers = marker_positions(self._prompt, ap.tokens, self._markers, n_skip=n_skip, decode=decode)

        values = {}
        for name, ps in self._groups.items():
            vals = []
            for a in self._analyses(ps):
                final = a.projection_final_at(tau)
                if self.group_position.value == "last":
                    vals.append(float(final[-1]))
                else:
                    vals.append(float(layer_profile(a, final[None], exclude_bos=bos)[0][0]))
            values[name] = vals
        stats = group_stats(values)

        self._data = {
            "tau": float(tau),
            "k": int(k),
            "singular_values": np.asarray(sub.singular_values, dtype=np.float64),
            "cumulative_energy": np.asarray(sub.cumulative_energy, dtype=np.float64),
            "labels": list(self._labels),
            "prompts": list(self._prompts),
            "layer_mean": np.stack(means),
            "layer_last": np.stack(lasts),
            "concentration_mean": np.stack(conc),
            "final_last": np.asarray(final_last),
            "position_prompt": self._prompt,
            "position_row": row,
            "position_pct": np.asarray(pos_pct, dtype=np.float64),
            "position_tokens": list(ap.tokens),
            "position_is_bos": np.asarray(ap.is_bos, dtype=bool),
            "markers": markers,
            "group_values": values,
            "groups": stats,
            "group_mean": stats["mean"].to_numpy(),
            "group_std": stats["std"].to_numpy(),
        }

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        # spectrum of W_U (log y)
        self.fig_spectrum, s = figure("Singular values of W_U", "index i", "S_i", y_scale=bq.LogScale())
        self._sv_line = bq.Lines(x=[1], y=[1], scales=s, colors=[colors(1)[0]])
        self._sv_points = bq.Scatter(
            x=[1], y=[1], scales=s, default_size=12, colors=[colors(1)[0]], tooltip=tooltip(["x", "y"], ["i", "S_i"], ["", ".4g"])
        )
        self._sv_k = bq.Lines(x=[1, 1], y=[1, 1], scales=s, colors=["#e15759"], line_style="dashed")
        self.fig_spectrum.marks = [self._sv_line, self._sv_points, self._sv_k]

        # cumulative energy with the tau marker
        self.fig_energy, s = figure(
            "Cumulative energy E(k)", "k (dimensions kept)", "E(k)", y_scale=bq.LinearScale(min=0, max=1)
        )
        self._energy_line = bq.Lines(x=[1], y=[0], scales=s, colors=[colors(1)[0]])
        self._tau_line = bq.Lines(x=[1, 1], y=[0, 0], scales=s, colors=["#e15759"], line_style="dashed")
        self._k_line = bq.Lines(x=[1, 1], y=[0, 1], scales=s, colors=["#e15759"], line_style="dashed")
        self._k_point = bq.Scatter(
            x=[1], y=[0], scales=s, colors=["#e15759"], default_size=64,
            tooltip=tooltip(["x", "y"], ["k(τ)", "E(k)"], ["", ".4f"]),
        )
        self.fig_energy.marks = [self._energy_line, self._tau_line, self._k_line, self._k_point]

        # projection by layer row: mean over positions (solid) and last position (dashed)
        pct_scale = bq.LinearScale(min=0, max=100)
        self.fig_layers, s = figure(
            "Projection % by layer", "row (0 = embeddings, l+1 = after layer l)", "% in token subspace",
            y_scale=pct_scale, legend=True,
        )
        self._layer_mean = bq.Lines(x=[0], y=[0], scales=s, display_legend=True, stroke_width=2)
        self._layer_last = bq.Lines(x=[0], y=[0], scales=s, display_legend=True, line_style="dashed")
        self._layer_points = bq.Scatter(
            x=[0], y=[0], scales=s, default_size=24, tooltip=point_tooltip("row", "%", ".2f")
        )
        self.fig_layers.marks = [self._layer_mean, self._layer_last, self._layer_points]

        self.fig_concentration, s = figure(
            "Concentration index (mean over positions)", "row", "area under projection curve",
            y_scale=bq.LinearScale(min=0, max=1),
        )
        self._conc_line = bq.Lines(x=[0], y=[0], scales=s, display_legend=True)
        self._conc_points = bq.Scatter(x=[0], y=[0], scales=s, default_size=24, tooltip=point_tooltip("row", "index", ".3f"))
        self.fig_concentration.marks = [self._conc_line, self._conc_points]

        # projection over positions of one prompt, with markers
        self.fig_positions, s = figure(
            "Projection % over positions", "token position", "% in token subspace",
            y_scale=bq.LinearScale(min=0, max=100), height="320px",
        )
        self._pos_line = bq.Lines(x=[0], y=[0], scales=s, colors=[colors(1)[0]])
        self._pos_points = bq.Scatter(
            x=[0], y=[0], scales=s, default_size=24, colors=[colors(1)[0]],
            tooltip=tooltip(["name", "x", "y"], ["token", "position", "%"], ["", "", ".2f"]),
        )
        self._marker_lines = bq.Lines(x=[0, 0], y=[0, 100], scales=s, colors=["#e15759"], line_style="dashed")
        self._marker_labels = bq.Label(x=[0], y=[96], text=[""], scales=s, colors=["#e15759"], x_offset=4, font_weight="bold")
        self.fig_positions.marks = [self._pos_line, self._pos_points, self._marker_lines, self._marker_labels]

        # groups
        gx = bq.OrdinalScale()
        self.fig_groups, s = figure(
            "Final projection % by prompt group (± 1 s.d.)", "group", "% in token subspace",
            x_scale=gx, y_scale=bq.LinearScale(min=0, max=100),
        )
        self._group_bars = bq.Bars(
            x=["-"], y=[0], scales=s, colors=[colors(1)[0]], opacities=[0.8],
            tooltip=tooltip(["x", "y"], ["group", "mean %"], ["", ".2f"]),
        )
        self._group_whiskers = bq.Lines(x=[["-", "-"]], y=[[0, 0]], scales=s, colors=["#333333"], stroke_width=2)
        self._group_points = bq.Scatter(
            x=["-"], y=[0], scales=s, default_size=20, colors=["#e15759"],
            tooltip=tooltip(["name", "y"], ["prompt", "%"], ["", ".2f"]),
        )
        self.fig_groups.marks = [self._group_bars, self._group_whiskers, self._group_points]

    def _refresh(self) -> None:
        self._compute()
        self._draw()

    def _draw(self) -> None:
        d = self._data
        sv, ce, k = d["singular_values"], d["cumulative_energy"], d["k"]
        m = len(sv)
        idx = np.arange(1, m + 1)
        self.k_label.value = (
            f"<b>k(τ={d['tau']:.2f}) = {k}</b> of {m} dimensions "
            f"(E(k) = {ce[k - 1]:.3f})"
        )
        update(self._sv_line, x=idx, y=sv)
        update(self._sv_points, x=idx, y=sv)
        update(self._sv_k, x=[k, k], y=[float(sv.min()), float(sv.max())])
        update(self._energy_line, x=idx, y=ce)
        update(self._tau_line, x=[1, m], y=[d["tau"], d["tau"]])
        update(self._k_line, x=[k, k], y=[0.0, float(ce[k - 1])])
        update(self._k_point, x=[k], y=[float(ce[k - 1])])
        self.fig_energy.title = f"Cumulative energy E(k): τ = {d['tau']:.2f} needs k = {k} of {m}"

        P, R = d["layer_mean"].shape
        rows = np.arange(R)
        row_ticks(self.fig_layers, rows)
        row_ticks(self.fig_concentration, rows)
        cols = colors(P)
        update(self._layer_mean, x=rows, y=d["layer_mean"], colors=cols, labels=[f"{l} · mean" for l in d["labels"]])
        update(self._layer_last, x=rows, y=d["layer_last"], colors=cols, labels=[f"{l} · last" for l in d["labels"]])
        pts = series_points(
            rows,
            np.concatenate([d["layer_mean"], d["layer_last"]]),
            [f"{l} · mean" for l in d["labels"]] + [f"{l} · last" for l in d["labels"]],
        )
        update(self._layer_points, x=pts["x"], y=pts["y"], names=pts["names"], colors=pts["colors"], display_names=False)
        self._layer_points.colors = [cols[(i // R) % P] for i in range(2 * P * R)]
        update(self._conc_line, x=rows, y=d["concentration_mean"], colors=cols, labels=list(d["labels"]))
        pts = series_points(rows, d["concentration_mean"], d["labels"])
        update(self._conc_points, x=pts["x"], y=pts["y"], names=pts["names"], colors=pts["colors"], display_names=False)

        T = len(d["position_pct"])
        pos = np.arange(T)
        update(self._pos_line, x=pos, y=d["position_pct"])
        update(self._pos_points, x=pos, y=d["position_pct"], names=list(d["position_tokens"]), display_names=False)
        found = d["markers"][d["markers"]["pos"] >= 0]
        mx = found["pos"].to_numpy(dtype=np.float64)
        if len(mx):
            update(
                self._marker_lines,
                x=np.stack([mx, mx], axis=1),
                y=np.tile([0.0, 100.0], (len(mx), 1)),
                visible=True,
            )
            update(self._marker_labels, x=mx, y=np.full(len(mx), 96.0), text=found["name"].tolist(), visible=True)
        else:
            update(self._marker_lines, visible=False)
            update(self._marker_labels, visible=False)
        row = d["position_row"]
        where = "ln_final output" if row == FINAL else ("embeddings" if row == 0 else f"after layer {row - 1}")
        self.fig_positions.title = f"Projection % over positions ({where})"

        names = d["groups"]["group"].tolist()
        mean, std = d["group_mean"], d["group_std"]
        update(self._group_bars, x=names, y=mean, colors=colors(len(names)))
        update(
            self._group_whiskers,
            x=[[n, n] for n in names],
            y=np.stack([mean - std, mean + std], axis=1),
        )
        gx, gy, gn = [], [], []
        for name, vals in d["group_values"].items():
            ps = self._groups[name]
            gx += [name] * len(vals)
            gy += list(vals)
            gn += list(ps)
        update(self._group_points, x=gx, y=np.asarray(gy), names=gn, display_names=False)


__all__ = ["ProjectionExplorer", "DEFAULT_PROMPTS"]
