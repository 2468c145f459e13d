"""``AttributionExplorer``: which heads, MLPs and neurons write answer − counterfactual, over a prompt set.

For prompt p with answer a_p and counterfactual c_p, at its last token t_p and the output row, every writer's
direct logit attribution (``resid_widgets.analyses.attribution``: the final norm's scale frozen, pre-cap
logits) to ``W_U[:, a_p] − W_U[:, c_p]``. The charts show its mean over prompts (or one prompt):

* a layer × head heatmap of the heads' attributions;
* the logit difference by row (the accumulated residual through the final norm, as seed 001 draws it) and
  each layer's attention and MLP output's direct effect;
* the top writers (largest |value|) as bars, positive and negative;
* the top neurons of the MLPs with the largest |direct effect| (neurons recorded at the last token only).
"""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import numpy as np

from resid_widgets.analyses import attribution as A
from resid_widgets.analyses.workflows import mean_spread, per_prompt
from resid_widgets.widgets._charts import prompt_labels
from resid_widgets.widgets._explorer import ROW_LABEL, Chart, Explorer, dropdown, fit_dropdown, flow_row, int_ticks, status_line, update
from resid_widgets.widgets.resid import as_session

#: capital after a full stop, on prose the demo model knows (as ``LogitDiffExplorer``)
DEFAULT_PROMPTS = ["It was a fine morning.", "She said nothing.", "Mr. Darcy bowed."]
DEFAULT_ANSWER, DEFAULT_COUNTERFACTUAL = " The", " the"
POS_COLOR, NEG_COLOR = "#4e79a7", "#e15759"


class AttributionExplorer(Explorer):
    """Direct logit attribution to answer − counterfactual at each prompt's last token.

    ``AttributionExplorer(session, prompts, answers=" Paris", counterfactuals=" London")``; ``answers`` and
    ``counterfactuals`` are one token each, or one per prompt. ``top_k`` writers and neurons are drawn;
    neurons come from the ``top_mlps`` MLPs with the largest mean |direct effect|.
    Numbers: ``data()`` (numpy) and ``to_dataframe()``.
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: str | Sequence[str] | None = None,
        answers: str | Sequence[str] | None = None,
        counterfactuals: str | Sequence[str] | None = None,
        *,
        top_k: int = 10,
        top_mlps: int = 2,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        self.top_k, self.top_mlps = int(top_k), int(top_mlps)
        self.view_select = dropdown([("mean over prompts", -1)], -1, "show")
        self.status = status_line()
        self._set(
            prompts if prompts is not None else DEFAULT_PROMPTS,
            DEFAULT_ANSWER if answers is None else answers,
            DEFAULT_COUNTERFACTUAL if counterfactuals is None else counterfactuals,
        )
        self._build()
        self._draw()
        self.view_select.observe(self._guard(self._draw), "value")
        ch = self._charts
        self._init_layout(
            [
                self.view_select,
                flow_row(ch["heads"].widget, ch["rows"].widget, ch["layers"].widget),
                flow_row(ch["writers"].widget, ch["neurons"].widget),
            ]
        )

    # ---- public API -----------------------------------------------------------------------------
    @property
    def figures(self) -> dict[str, bq.Figure]:
        return {name: c.figure for name, c in self._charts.items()}

    def data(self) -> dict[str, Any]:
        """``labels`` [W], ``dla`` [P, W], ``mean`` / ``std`` [W], ``head_mean`` [L, H], ``layer_mean`` [L, 2]
        (attn, MLP), ``lens_diff`` [P, R] (logit difference by row), ``neuron_layers``, ``neurons`` [P, L', d_mlp],
        the prompts, answers, counterfactuals and last positions."""
        return dict(self._data)

    @property
    def attributions(self) -> list[A.Attribution]:
        return list(self._atts)

    def set_prompts(self, prompts, answers=None, counterfactuals=None) -> None:
        """New prompts (and optionally answers / counterfactuals); the charts update in place."""
        self._set(prompts, self._answers_arg if answers is None else answers, self._cf_arg if counterfactuals is None else counterfactuals)
        self._draw()

    def to_dataframe(self):
        """Long format: one row per (prompt, writer)."""
        import pandas as pd

        d = self._data
        P, Wn = d["dla"].shape
        return pd.DataFrame(
            {
                "prompt_index": np.repeat(np.arange(P), Wn),
                "label": np.repeat(d["labels"], Wn),
                "answer": np.repeat(d["answers"], Wn),
                "counterfactual": np.repeat(d["counterfactuals"], Wn),
                "writer": np.tile(d["writers"], P),
                "dla": d["dla"].reshape(-1),
            }
        )

    # ---- computation ----------------------------------------------------------------------------
    def _set(self, prompts, answers, counterfactuals) -> None:
        from resid_widgets.session.attribution import AttributionRun

        labels, plist = prompt_labels(prompts)
        if not plist:
            raise ValueError("no prompts given")
        ans = per_prompt(answers, len(plist), "answers")
        cfs = per_prompt(counterfactuals, len(plist), "counterfactuals")
        atts, lens, neurons, last = [], [], [], []
        for prompt, a, c in zip(plist, ans, cfs):
            run = AttributionRun(self.session, prompt, neuron_positions=[-1])
            att = run.dla(a, c, positions=-1)
            atts.append(att)
            lens.append(A.row_lens_values(run.writers, run.weights, int(att.target_ids[0]), int(att.counterfactual_ids[0])))
            if run.weights.has_neuron_hook:
                neurons.append(run.neurons(a, c, positions=-1).values[:, 0])  # [L, d_mlp]
            last.append(len(run.token_ids) - 1)
        summary = A.summarize(atts)
        mlp_idx = [i for i, lab in enumerate(summary["labels"]) if lab.endswith("_mlp_out")]
        order = sorted(mlp_idx, key=lambda i: -abs(summary["mean"][i]))[: self.top_mlps]
        neuron_layers = np.asarray(sorted(int(summary["labels"][i].split("_")[0]) for i in order), dtype=np.int64)
        self._atts, self._answers_arg, self._cf_arg = atts, answers, counterfactuals
        self._data = {
            "labels": labels,
            "prompts": plist,
            "answers": list(ans),
            "counterfactuals": list(cfs),
            "last_pos": np.asarray(last),
            "writers": summary["labels"],
            "dla": summary["values"],
            "mean": summary["mean"],
            "std": summary["std"],
            "head_mean": summary["head_mean"],
            "layer_mean": summary["layer_mean"],
            "lens_diff": np.stack(lens).astype(np.float64),
            "neuron_layers": neuron_layers,
            "neurons": np.stack([n[neuron_layers] for n in neurons]) if neurons else np.zeros((len(plist), 0, 0)),
        }
        options = [(f"mean over {len(plist)} prompt(s)", -1)] + [(f"{i}: {l}", i) for i, l in enumerate(labels)]
        keep = self.view_select.value if self.view_select.value < len(plist) else -1
        with self.view_select.hold_trait_notifications():
            self.view_select.options = options
            self.view_select.value = keep
        fit_dropdown(self.view_select)

    def view(self) -> dict[str, Any]:
        """What the charts show now: the mean over prompts, or the selected prompt's numbers."""
        d, i = self._data, int(self.view_select.value)
        att0 = self._atts[0]
        vals = d["mean"] if i < 0 else d["dla"][i]
        layers = d["layer_mean"] if i < 0 else self._atts[i].layer_values[:, :, -1].astype(np.float64)
        neurons = d["neurons"].mean(0) if i < 0 else d["neurons"][i]
        return {
            "values": vals,
            "heads": vals[: att0.row * att0.n_heads].reshape(att0.row, att0.n_heads),
            "layers": layers,
            "neurons": neurons,
        }

    def top_writers(self) -> tuple[list[str], np.ndarray]:
        """The ``top_k`` writers by |value| in the current view, sorted by value (largest first)."""
        return top_by_magnitude(self._data["writers"], self.view()["values"], self.top_k)

    def top_neurons(self) -> tuple[list[str], np.ndarray]:
        n, layers = self.view()["neurons"], self._data["neuron_layers"]
        if n.size == 0:
            return [], np.zeros(0)
        flat = np.argsort(-np.abs(n), axis=None, kind="stable")[: self.top_k]
        li, ni = np.unravel_index(flat, n.shape)
        pairs = sorted(((A.neuron_label(int(layers[a]), int(b)), float(n[a, b])) for a, b in zip(li, ni)), key=lambda p: -p[1])
        return [p[0] for p in pairs], np.asarray([p[1] for p in pairs])

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        heads = Chart("Heads: direct logit attribution (blue raises, red lowers)", "head", "layer", x_scale=bq.OrdinalScale(), y_scale=bq.OrdinalScale(reverse=True))
        self._color = bq.ColorScale(scheme="RdBu", mid=0.0)
        self._grid = bq.GridHeatMap(
            color=np.zeros((2, 2)), scales={"row": heads.scales["y"], "column": heads.scales["x"], "color": self._color},
            tooltip=bq.Tooltip(fields=["row", "column", "color"], labels=["layer", "head", "dla"], formats=["", "", ".4f"]),
        )
        heads.figure.marks = [self._grid]
        rows = Chart("Logit difference by row", ROW_LABEL, "answer − cf. (pre-cap)", tooltip_fields=("row", "logit diff"), tooltip_format=".3f")
        self._band = bq.Lines(x=[0], y=[0], scales=rows.scales, fill="between", fill_opacities=[0.25], fill_colors=[POS_COLOR], colors=["transparent"], stroke_width=0)
        self._curve = bq.Lines(x=[0], y=[0], scales=rows.scales, colors=[POS_COLOR], stroke_width=3)
        rows.figure.marks = [self._band, self._curve]
        layers = Chart("Direct effect per layer", "layer", "dla", tooltip_fields=("layer", "dla"), tooltip_format=".4f")
        self._layer_lines = bq.Lines(x=[0], y=[[0], [0]], scales=layers.scales, colors=[POS_COLOR, "#f28e2b"], stroke_width=2)
        layers.figure.marks = [self._layer_lines]
        layers.set_legend([("attention", POS_COLOR, "solid", "line"), ("MLP", "#f28e2b", "solid", "line")])
        writers = bar_chart("Top writers", "writer")
        neurons = bar_chart("Top neurons of the top MLPs", "neuron")
        self._charts = {"heads": heads, "rows": rows, "layers": layers, "writers": writers, "neurons": neurons}

    def _draw(self) -> None:
        d, v = self._data, self.view()
        ch = self._charts
        L, H = v["heads"].shape
        m = float(np.abs(v["heads"]).max()) or 1.0
        update(self._color, min=-m, max=m)
        update(self._grid, row=np.arange(L), column=np.arange(H), color=v["heads"])
        mean, std = mean_spread(d["lens_diff"], axis=0)
        i = int(self.view_select.value)
        curve = mean if i < 0 else d["lens_diff"][i]
        R = len(curve)
        int_ticks(ch["rows"].x_axis, np.arange(R))
        update(self._band, x=np.arange(R), y=np.stack([mean - std, mean + std]), visible=i < 0)
        update(self._curve, x=np.arange(R), y=curve)
        int_ticks(ch["layers"].x_axis, np.arange(L))
        update(self._layer_lines, x=np.arange(L), y=v["layers"].T)
        draw_bars(ch["writers"], *self.top_writers())
        draw_bars(ch["neurons"], *self.top_neurons())
        ch["neurons"].title = (
            f"Top neurons of MLP layer(s) {', '.join(map(str, d['neuron_layers']))}" if len(d["neuron_layers"]) else "No MLP neurons in this model"
        )
        who = "mean over prompts" if i < 0 else d["labels"][i]
        ch["heads"].title = f"Heads: direct logit attribution, {who} (blue raises, red lowers)"

def bar_chart(title: str, what: str, *, basis: str = "420px") -> Chart:
    """A bar chart of signed values (positive and negative bars in two colours), labels on an ordinal x axis."""
    c = Chart(title, what, "dla", x_scale=bq.OrdinalScale(), margin=dict(bottom=84), basis=basis)
    c.x_axis.tick_rotate = -35
    c.x_axis.tick_style = {"text-anchor": "end"}  # a rotated label ends at its tick, below the axis
    c.x_axis.label_offset = "62px"
    tip = bq.Tooltip(fields=["x", "y"], labels=[what, "dla"], formats=["", ".4f"])
    c.bars = [bq.Bars(x=["-"], y=[0.0], scales=c.scales, colors=[col], tooltip=tip, padding=0.2) for col in (POS_COLOR, NEG_COLOR)]
    c.figure.marks = list(c.bars)
    c.set_legend([("raises answer − cf.", POS_COLOR, "solid", "bar"), ("lowers it", NEG_COLOR, "solid", "bar")])
    return c


def draw_bars(chart: Chart, labels: Sequence[str], values: np.ndarray, *, max_labels: int = 24) -> None:
    """Signed bars; beyond ``max_labels`` bars only every n-th is labelled (hover shows each bar's label)."""
    labels = list(labels) or ["-"]
    values = np.asarray(values, dtype=np.float64) if len(values) else np.zeros(1)
    pos, neg = chart.bars
    update(pos, x=labels, y=np.maximum(values, 0.0))
    update(neg, x=labels, y=np.minimum(values, 0.0))
    step = -(-len(labels) // max_labels)
    chart.x_axis.tick_values = list(labels[::step]) if step > 1 else None  # None: every label
    chart.y_axis.tick_values = nice_ticks(min(0.0, float(values.min())), max(0.0, float(values.max())))


def nice_ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """About ``n`` round ticks (1, 2 or 5 times a power of ten apart) inside [lo, hi]."""
    span = max(hi - lo, 1e-12)
    raw = span / n
    step = min((m * 10.0 ** np.floor(np.log10(raw)) for m in (1, 2, 5, 10) if m * 10.0 ** np.floor(np.log10(raw)) >= raw), default=raw)
    ticks = np.arange(np.ceil(lo / step - 1e-9), np.floor(hi / step + 1e-9) + 1) * step
    return ticks + 0.0  # no -0.0


def top_by_magnitude(labels: Sequence[str], values: np.ndarray, k: int) -> tuple[list[str], np.ndarray]:
    """The k entries with the largest |value|, sorted by value (largest first)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    order = order[np.argsort(-values[order], kind="stable")]
    return [labels[j] for j in order], values[order]


__all__ = ["AttributionExplorer", "bar_chart", "draw_bars", "top_by_magnitude"]
