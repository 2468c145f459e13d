"""``ContributionExplorer`` (seed 004): how large are the attention and MLP updates to the residual stream?

For layer l and position t: ``‖attn_out_l[t]‖₂`` and ``‖mlp_out_l[t]‖₂`` (``blocks.l.hook_attn_out`` /
``hook_mlp_out``). Prompts run as one right-padded batch and each ``Analysis`` keeps only its real
tokens, so padding never enters a statistic. The BOS position's updates are typically far larger than
any other; a toggle excludes it.
"""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.workflows import contribution_workflow
from resid_widgets.widgets._charts import prompt_labels
from resid_widgets.widgets._explorer import (
    Chart,
    Explorer,
    check_index,
    dropdown,
    fit_dropdown,
    flow_row,
    int_ticks,
    status_line,
    tooltip,
    update,
)
from resid_widgets.widgets.resid import as_session

DEFAULT_PROMPTS = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition.",
    "The family of Dashwood had long been settled in Sussex.",
]
ATTN_COLOR, MLP_COLOR = "#4e79a7", "#f28e2b"


class ContributionExplorer(Explorer):
    """Attention vs MLP output norms per layer and position, over one or many prompts.

    ``ContributionExplorer(session, prompts)`` shows

    * layer-wise evolution: the mean over all real positions of all prompts of ‖attn_out‖ and ‖mlp_out‖
      per layer, with ± 1 s.d. bands;
    * the histogram of those magnitudes by component (shared bin edges);
    * a per-position view of one prompt at one layer (grouped bars; choose the prompt and the layer);
    * a toggle excluding the BOS position from all of the above.

    The additivity check (``resid_pre + attn_out = resid_mid``, ``resid_mid + mlp_out = resid_post``) is
    reported under the charts. Numbers: ``data()`` (numpy), ``to_dataframe()`` (one row per prompt × layer ×
    position).
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: str | Sequence[str] | None = None,
        *,
        exclude_bos: bool = True,
        bins: int = 30,
        prompt_index: int = 0,
        layer: int = 0,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        if isinstance(bins, (bool, np.bool_)) or not isinstance(bins, (int, np.integer)) or int(bins) < 1:
            raise ValueError(f"bins must be a whole number of histogram bins, 1 or more, got {bins!r}")
        self.bins = int(bins)
        L = self.session.n_layers
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS", indent=False)
        self.prompt_select = dropdown([("-", 0)], 0, "prompt")
        layer = check_index("layer", layer, L, " (the block whose attention / MLP output is shown)")
        self.layer_slider = W.IntSlider(value=layer, min=0, max=L - 1, description="layer", continuous_update=False)
        self.check = W.HTML()
        self.status = status_line()
        self._set(DEFAULT_PROMPTS if prompts is None else prompts, prompt_index)
        self._start(
            lambda ch: [
                self.bos_toggle,
                flow_row(ch["layers"].widget, ch["histogram"].widget),
                flow_row(self.prompt_select, self.layer_slider),
                ch["positions"].widget,
                self.check,
            ],
            compute=False,
        )
        for w in (self.bos_toggle, self.prompt_select, self.layer_slider):
            w.observe(self._guard(self._refresh), "value")

    # ---- public API -----------------------------------------------------------------------------
    @property
    def analyses(self) -> list:
        return list(self._analyses)

    @property
    def layer(self) -> int:
        """The layer of the per-position chart (block l's attention and MLP outputs)."""
        return int(self.layer_slider.value)

    @layer.setter
    def layer(self, value: int) -> None:
        self.layer_slider.value = check_index("layer", value, self.session.n_layers)

    @property
    def prompt_index(self) -> int:
        return int(self.prompt_select.value)

    @prompt_index.setter
    def prompt_index(self, value: int) -> None:
        self.prompt_select.value = check_index("prompt_index", value, len(self._analyses))

    def set_prompts(self, prompts: str | Sequence[str], prompt_index: int = 0) -> None:
        self._set(prompts, prompt_index)
        self._refresh()

    def to_dataframe(self):
        """Long format over the real positions of every prompt (BOS included, flagged)."""
        import pandas as pd

        frames = []
        for i, (label, a) in enumerate(zip(self._labels, self._analyses)):
            L, T = a.attn_norm.shape
            frames.append(
                pd.DataFrame(
                    {
                        "prompt_index": i,
                        "label": label,
                        "layer": np.repeat(np.arange(L), T),
                        "pos": np.tile(np.arange(T), L),
                        "token": np.tile(np.asarray(a.tokens, dtype=object), L),
                        "is_bos": np.tile(a.is_bos, L),
                        "attn_norm": a.attn_norm.reshape(-1),
                        "mlp_norm": a.mlp_norm.reshape(-1),
                    }
                )
            )
        return pd.concat(frames, ignore_index=True)

    # ---- computation ----------------------------------------------------------------------------
    def _set(self, prompts, prompt_index: int) -> None:
        labels, plist = prompt_labels(prompts)
        prompt_index = check_index("prompt_index", prompt_index, len(plist))
        analyses = self.session.analyze_batch(plist, top_k=1)
        self._labels, self._prompts, self._analyses = labels, plist, analyses
        options = [(f"{i}: {l}", i) for i, l in enumerate(labels)]
        with self.prompt_select.hold_trait_notifications():
            self.prompt_select.options = options
            self.prompt_select.value = prompt_index
        fit_dropdown(self.prompt_select)
        self._compute()

    def _compute(self) -> None:
        self._data = contribution_workflow(
            self._analyses, exclude_bos=self.bos_toggle.value, bins=self.bins,
            prompt_index=int(self.prompt_select.value), layer=int(self.layer_slider.value),
        )
        self._data.update(labels=list(self._labels), prompts=list(self._prompts))

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        ch = self._charts = {}
        c = ch["layers"] = Chart("Update size by layer (mean ± 1 s.d.)", "layer", "‖output‖₂", tooltip_fields=("layer", "mean ‖·‖"))
        self._bands = bq.Lines(
            x=[0], y=[0], scales=c.scales, fill="between", fill_colors=[ATTN_COLOR], fill_opacities=[0.2],
            colors=["transparent"], stroke_width=0,
        )
        self._bands_mlp = bq.Lines(
            x=[0], y=[0], scales=c.scales, fill="between", fill_colors=[MLP_COLOR], fill_opacities=[0.2],
            colors=["transparent"], stroke_width=0,
        )
        self._means = bq.Lines(x=[0], y=[0], scales=c.scales, colors=[ATTN_COLOR, MLP_COLOR], stroke_width=3)
        c.figure.marks = [self._bands, self._bands_mlp, self._means]
        c.set_legend([("attention ± 1 s.d.", ATTN_COLOR, "solid", "band"), ("MLP ± 1 s.d.", MLP_COLOR, "solid", "band")])

        c = ch["histogram"] = Chart("Distribution of update sizes", "‖output‖₂ (bin centre)", "count")
        # One 1-D Bars mark per component, side by side (align left / right): bqplot 0.13's grouped
        # 2-D Bars draw nothing in JupyterLab 4 (seen in the end-to-end test's screenshot). A padding of
        # 0.55 keeps each pair inside its own band (each bar is 0.45 of it).
        self._hist = [
            bq.Bars(
                x=[0.0], y=[0], scales=c.scales, colors=[color], padding=0.55, align=align, opacities=[0.85],
                tooltip=tooltip(["x", "y"], ["bin centre", f"{label} count"], [".4g", "d"]),
            )
            for label, color, align in (("attention", ATTN_COLOR, "left"), ("MLP", MLP_COLOR, "right"))
        ]
        c.figure.marks = list(self._hist)
        c.set_legend([("attention", ATTN_COLOR, "", "bar"), ("MLP", MLP_COLOR, "", "bar")])

        c = ch["positions"] = Chart(
            "Update size per position", "position: token", "‖output‖₂", x_scale=bq.OrdinalScale(), height=340,
            basis="100%", margin=dict(bottom=110),
        )
        self._pos_bars = [
            bq.Bars(
                x=["-"], y=[0], scales=c.scales, colors=[color], padding=0.55, align=align,
                tooltip=tooltip(["x", "y"], ["token", f"‖{label} out‖₂"], ["", ".4g"]),
            )
            for label, color, align in (("attention", ATTN_COLOR, "left"), ("MLP", MLP_COLOR, "right"))
        ]
        c.figure.marks = list(self._pos_bars)
        c.x_axis.tick_rotate = -45
        c.x_axis.tick_style = {"text-anchor": "end"}  # rotated labels hang below their tick, never over the bars
        c.x_axis.label_offset = "96px"
        c.set_legend([("attention", ATTN_COLOR, "", "bar"), ("MLP", MLP_COLOR, "", "bar")])
        self.fig_layers, self.fig_hist, self.fig_positions = (ch[k].figure for k in ("layers", "histogram", "positions"))

    def _draw(self) -> None:
        d = self._data
        ch = self._charts
        L = len(d["attn_mean"])
        layers = np.arange(L)
        update(self._bands, x=layers, y=np.stack([d["attn_mean"] - d["attn_std"], d["attn_mean"] + d["attn_std"]]))
        update(self._bands_mlp, x=layers, y=np.stack([d["mlp_mean"] - d["mlp_std"], d["mlp_mean"] + d["mlp_std"]]))
        update(self._means, x=layers, y=np.stack([d["attn_mean"], d["mlp_mean"]]), colors=[ATTN_COLOR, MLP_COLOR])
        ch["layers"].set_dots(layers, [d["attn_mean"], d["mlp_mean"]], ["attention", "MLP"], [ATTN_COLOR, MLP_COLOR])
        bos = "no BOS" if d["exclude_bos"] else "with BOS"
        ch["layers"].title = f"Update size by layer: mean ± 1 s.d. over {d['n_positions']} positions ({bos})"
        int_ticks(ch["layers"].x_axis, layers)
        edges = d["hist_edges"]
        centres = (edges[:-1] + edges[1:]) / 2
        update(self._hist[0], x=centres, y=d["hist_attn"])
        update(self._hist[1], x=centres, y=d["hist_mlp"])
        names = [f"{p}: {t}" for p, t in zip(d["positions"], d["position_tokens"])]
        short = {n: n if len(n) <= 14 else n[:13] + "…" for n in names}
        update(self._pos_bars[0], x=names, y=d["position_attn"])
        update(self._pos_bars[1], x=names, y=d["position_mlp"])
        # at most 40 tick labels (rotated, 13 characters at most) so neighbours never collide
        step = max(1, int(np.ceil(len(names) / 40)))
        ch["positions"].x_axis.tick_values = names[::step]
        ch["positions"].x_axis.tick_labels = {n: s for n, s in short.items() if s != n}
        # the axis title just below the longest rotated label (about 6.5 px a character, times sin 45°)
        drop = int(22 + 4.6 * max((len(short[n]) for n in names), default=4))
        ch["positions"].x_axis.label_offset = f"{drop}px"
        ch["positions"].figure.fig_margin = dict(ch["positions"].figure.fig_margin, bottom=drop + 14)
        ch["positions"].title = f"Update size per position: {d['labels'][d['prompt_index']]}, layer {d['layer']}"
        worst = max(max(a["attn"], a["mlp"]) for a in d["additivity"])
        ok = all(a["holds"] for a in d["additivity"])
        self.check.value = (
            f"Residual decomposition check: max relative error {worst:.1e} "
            + ("(holds: the norms are the updates to the stream)." if ok else
               "<b>(does not hold: this architecture's outputs are not plain additive updates; read the norms with care)</b>")
        )


__all__ = ["ContributionExplorer"]
