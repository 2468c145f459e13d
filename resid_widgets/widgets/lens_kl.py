"""``LensKLExplorer``: the tuned-lens paper's figure — how far each lens's reading is from the model's output, by layer.

For every lens (logit, Jacobian, tuned, or lens objects) the prompts run as one right-padded batch
(``Session.analyze_batch(prompts, lens=kind)``, once per lens); per residual row the explorer pools
``KL(model output ‖ lens)`` over every real position of every prompt (BOS excluded while the toggle is on)
and draws its mean with a spread band (the middle 50 % of positions, or ± 1 s.d.), beside the lens's mean
entropy or its top-1 agreement with the model's output. The numbers are ``analyses.lens_stats``'s; this
module only lays them out.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.lens_stats import comparison_table, lens_comparison
from resid_widgets.widgets._charts import prompt_labels, table_html, unique
from resid_widgets.widgets._explorer import (
    PALETTE,
    ROW_LABEL,
    Chart,
    Explorer,
    dropdown,
    flow_row,
    log_ticks,
    status_line,
    update,
)
from resid_widgets.widgets.resid import as_session

#: invented Austen-like sentences (not quotations: none is in the demo model's training text)
DEFAULT_PROMPTS = [
    "Miss Bennet was not in the habit of walking out before breakfast, but the morning was fine.",
    "It was generally agreed at Highbury that Mr. Elton would be married within the year.",
    "Her mother could not be persuaded that a man of such fortune would be indifferent to her daughter.",
    "The carriage was ordered for eleven, and the whole party set off in very good spirits.",
    "Captain Wentworth said nothing, but his looks were not lost upon Anne.",
]
DEFAULT_LENSES = ("logit", "jacobian", "tuned")
#: one colour per lens, the same in every chart (and in CompareWidget's lens mode)
LENS_COLORS = {"logit": "#4e79a7", "jacobian": "#f28e2b", "tuned": "#59a14f"}
SPREADS = {"iqr": "middle 50 % of positions (25th–75th percentile)", "std": "± 1 s.d."}
SECOND = {"entropy": "lens entropy", "agreement": "top-1 agreement with the model"}
X_LABEL = ROW_LABEL  # the one layer numbering (analyses.rows)
LOG_FLOOR = 1e-4  # nats: a band's lower edge on the log axis never goes below this


def lens_colors(names: Sequence[str]) -> list[str]:
    """The lens's own colour for the three kinds, then unused palette colours for the others."""
    spare = [c for c in PALETTE if c not in LENS_COLORS.values()]
    out: list[str] = []
    for n in names:
        own = LENS_COLORS.get(n)
        if own is not None and own not in out:
            out.append(own)
        else:
            out.append(spare.pop(0) if spare else PALETTE[len(out) % len(PALETTE)])
    return out


def _lens_name(lens: Any) -> str:
    if isinstance(lens, str):
        return lens
    return str(getattr(lens, "kind", "") or type(lens).__name__)


class LensKLExplorer(Explorer):
    """Mean KL(model output ‖ lens) by layer for several lenses over a prompt set, with its spread.

    ``LensKLExplorer(session, prompts, lenses=("logit", "jacobian", "tuned"))``; ``lenses`` are kinds the session
    knows (the demo model ships a Jacobian and a tuned lens; other models: ``session.fit_lens`` /
    ``session.load_lens``) or lens objects. A kind the session has no lens for is listed as unavailable under
    the charts (fit or load one, then press *recompute*). Shows

    * KL(model output ‖ lens) in nats by residual row (embeddings, then each layer's output): the mean over all
      real positions of all prompts, with a band (middle 50 % of positions, or ± 1 s.d.), linear or log axis;
    * beside it, per lens, the mean entropy of the lens distribution (same band) or the top-1 agreement
      (% of positions whose lens top-1 is the model's own top-1);
    * a table of the numbers.

    Controls: the prompts (one per line; *recompute* runs them), exclude BOS, log axis, the band, the second chart.
    Numbers: ``data()`` (numpy), ``to_dataframe()`` (one row per lens × row).
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: str | Sequence[str] | None = None,
        *,
        lenses: Sequence[Any] = DEFAULT_LENSES,
        exclude_bos: bool = True,
        log: bool = False,
        spread: str = "iqr",
        second: str = "entropy",
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        if isinstance(lenses, str) or not lenses:
            lenses = [lenses] if isinstance(lenses, str) and lenses else []
        if not lenses:
            raise ValueError("give at least one lens: lenses=('logit', 'jacobian', 'tuned')")
        if spread not in SPREADS:
            raise ValueError(f"unknown spread {spread!r}; choose one of {', '.join(SPREADS)}")
        if second not in SECOND:
            raise ValueError(f"unknown second chart {second!r}; choose one of {', '.join(SECOND)}")
        self._lens_args = list(lenses)
        self._names = unique([_lens_name(l) for l in self._lens_args])
        self._colors = dict(zip(self._names, lens_colors(self._names)))
        plist = DEFAULT_PROMPTS if prompts is None else prompt_labels(prompts)[1]
        self.prompts_text = W.Textarea(
            value="\n".join(plist), description="prompts", placeholder="one prompt per line",
            layout=W.Layout(width="auto", height="8em"),
        )
        self.recompute_button = W.Button(description="recompute", icon="refresh", tooltip="run the prompts above with every lens")
        gap = dict(width="auto", margin="2px 16px 2px 4px")
        self.bos_toggle = W.Checkbox(value=exclude_bos, description="exclude BOS", indent=False, layout=W.Layout(**gap))
        self.log_toggle = W.Checkbox(value=log, description="log KL axis", indent=False, layout=W.Layout(**gap))
        self.spread_dropdown = dropdown([(v, k) for k, v in SPREADS.items()], spread, "band")
        self.second_dropdown = dropdown([(v, k) for k, v in SECOND.items()], second, "right chart")
        self.availability = W.HTML(layout=W.Layout(min_height="0"))
        self.table = W.HTML()
        self.status = status_line()
        self._set(plist)
        self._start(
            lambda ch: [
                self.prompts_text,
                flow_row(self.recompute_button, self.bos_toggle, self.log_toggle, self.spread_dropdown, self.second_dropdown),
                self.availability,
                flow_row(ch["kl"].widget, ch["second"].widget),
                self.table,
            ],
            compute=False,
        )
        self.recompute_button.on_click(self._guard(lambda: self.set_prompts(self._text_prompts())))
        self.bos_toggle.observe(self._guard(self._refresh), "value")
        for w in (self.log_toggle, self.spread_dropdown, self.second_dropdown):
            w.observe(self._guard(self._draw), "value")

    # ---- public API -----------------------------------------------------------------------------

    @property
    def analyses(self) -> dict[str, list]:
        """``{lens name: [Analysis per prompt]}`` for the lenses that are available."""
        return {k: list(v) for k, v in self._analyses.items()}

    @property
    def lenses(self) -> list[str]:
        """The lenses shown (available), in order."""
        return list(self._analyses)

    @property
    def unavailable(self) -> dict[str, str]:
        """``{lens name: why it is not shown}``."""
        return dict(self._unavailable)

    def set_prompts(self, prompts: str | Sequence[str]) -> None:
        """Run new prompts with every lens; the charts update in place (nothing changes if the prompts are bad)."""
        plist = prompt_labels(prompts)[1]
        self._set(plist)
        self._draw()
        text = "\n".join(plist)
        if self.prompts_text.value != text:
            self.prompts_text.value = text

    def data(self) -> dict[str, Any]:
        """``kl`` / ``entropy`` (``{lens: dict(mean, std, q25, median, q75, n)}``, arrays [R]), ``agreement``
        (``{lens: dict(pct, median_rank, n)}``), ``rows``, ``row_labels``, ``lenses``, ``unavailable``, ``prompts``."""
        d = dict(self._data)
        d.update(spread=self.spread_dropdown.value, log=bool(self.log_toggle.value), second=self.second_dropdown.value)
        return d

    def to_dataframe(self):
        """One row per (lens, residual row): KL and entropy statistics, top-1 agreement, the number of positions."""
        return comparison_table(self._data)

    # ---- computation ----------------------------------------------------------------------------
    def _text_prompts(self) -> list[str]:
        plist = [line for line in self.prompts_text.value.splitlines() if line.strip()]
        if not plist:
            raise ValueError("no prompts: type at least one, one per line")
        return plist

    def _set(self, plist: list[str]) -> None:
        if not plist:
            raise ValueError("no prompts: give at least one")
        for p in plist:  # a bad prompt is the prompt's fault, never reported as a missing lens
            self.session.to_token_ids(p)
        analyses, unavailable = {}, {}
        for name, lens in zip(self._names, self._lens_args):
            try:
                analyses[name] = self.session.analyze_batch(plist, top_k=1, lens=lens)
            except (ValueError, FileNotFoundError) as err:  # no such lens for this model (or its file)
                if lens == "logit":
                    raise
                unavailable[name] = str(err)
        if not analyses:
            raise ValueError("none of the lenses is available for this model: " + "; ".join(f"{k}: {v}" for k, v in unavailable.items()))
        self._prompts, self._analyses, self._unavailable = list(plist), analyses, unavailable
        self._compute()

    def _compute(self) -> None:
        self._data = lens_comparison(self._analyses, exclude_bos=self.bos_toggle.value)
        self._data.update(
            prompts=list(self._prompts), unavailable=dict(self._unavailable),
            colors={n: self._colors[n] for n in self._data["lenses"]},
        )

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self._linear, self._log = bq.LinearScale(), bq.LogScale()
        kl = Chart("KL(model output ‖ lens) by layer", X_LABEL, "KL, nats", y_scale=self._linear,
                   tooltip_fields=("row", "mean KL"), basis="420px", rows=True)
        second = Chart("Lens entropy by layer", X_LABEL, "entropy, nats", tooltip_fields=("row", "mean"), basis="420px",
                       rows=True)
        self._charts = {"kl": kl, "second": second}
        self._bands, self._lines = {}, {}
        for key, c in self._charts.items():
            bands = [
                bq.Lines(x=[0], y=[[0], [0]], scales=c.scales, fill="between", fill_colors=[self._colors[n]],
                         fill_opacities=[0.18], colors=["transparent"], stroke_width=0)
                for n in self._names
            ]
            lines = [bq.Lines(x=[0], y=[0], scales=c.scales, colors=[self._colors[n]], stroke_width=2.5) for n in self._names]
            c.figure.marks = bands + lines
            self._bands[key], self._lines[key] = dict(zip(self._names, bands)), dict(zip(self._names, lines))
        self.fig_kl, self.fig_second = kl.figure, second.figure

    def _set_y_scale(self, chart: Chart, scale: Any) -> None:
        """Swap a chart's y scale (linear <-> log) on its axis and every mark, in place."""
        if chart.scales["y"] is scale:
            return
        chart.scales["y"] = scale
        chart.y_axis.scale = scale
        for mark in chart.figure.marks:
            mark.scales = dict(mark.scales, y=scale)

    def _band(self, stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if self.spread_dropdown.value == "iqr":
            return stats["q25"], stats["q75"]
        return np.maximum(stats["mean"] - stats["std"], 0.0), stats["mean"] + stats["std"]

    def _draw(self) -> None:
        rows = self._data["rows"]
        for c in self._charts.values():  # a fixed row range: the log axis leaves the last row out, the ticks stay inside
            update(c.scales["x"], min=float(rows[0]), max=float(rows[-1]))
            c.set_rows(rows, max_ticks=len(rows))
        self._draw_kl()
        self._draw_second()
        self._draw_availability()
        self._draw_table()

    def _context(self) -> tuple[int, int, str, str]:
        """(positions pooled, prompts, "BOS excluded/included", the band's legend text)."""
        d = self._data
        bos = "BOS excluded" if d["exclude_bos"] else "BOS included"
        band = "25–75 %" if self.spread_dropdown.value == "iqr" else "± 1 s.d."
        return d["kl"][d["lenses"][0]]["n"], len(d["prompts"]), bos, band

    def _draw_kl(self) -> None:
        """KL by row: on a log axis the last row (KL 0 by definition) is left out."""
        d, kl = self._data, self._charts["kl"]
        rows, shown, log = d["rows"], d["lenses"], bool(self.log_toggle.value)
        n, P, bos, band_label = self._context()
        keep = rows < rows[-1] if log else np.ones(len(rows), dtype=bool)
        series = {}
        for name in shown:
            s = d["kl"][name]
            lo, hi = self._band(s)
            lo = np.maximum(lo, LOG_FLOOR) if log else lo
            series[name] = (lo[keep], hi[keep], s["mean"][keep])
        # bqplot draws a swapped scale's axis with the tick format it has at that moment, and a log scale must never
        # see a 0: the ticks first, then (to log) the positive data before the scale, or (to linear) the scale first
        if log:
            kl.y_axis.tick_values = log_ticks(min(v.min() for t in series.values() for v in t),
                                              max(v.max() for t in series.values() for v in t))
            kl.y_axis.tick_format = ",~g"
        else:
            kl.y_axis.tick_values = None
            kl.y_axis.tick_format = None
            self._set_y_scale(kl, self._linear)
        for name in self._names:
            band, line = self._bands["kl"][name], self._lines["kl"][name]
            if name not in series:
                update(band, visible=False)
                update(line, visible=False)
                continue
            lo, hi, mean = series[name]
            update(band, x=rows[keep], y=np.stack([lo, hi]), visible=True)
            update(line, x=rows[keep], y=mean, visible=True)
        kl.set_dots([rows[keep]] * len(shown), [series[k][2] for k in shown], shown, [self._colors[k] for k in shown])
        if log:
            self._set_y_scale(kl, self._log)
        kl.y_axis.label = "KL, nats (log)" if log else "KL, nats"
        kl.title = (
            f"KL(model output ‖ lens) by layer: mean over {n} positions of {P} prompt(s), {bos}"
            + (" (the output row, KL 0, not drawn on the log axis)" if log else "")
        )
        kl.set_legend((f"{k} lens: mean, band {band_label}", self._colors[k], "solid", "band") for k in shown)

    def _draw_second(self) -> None:
        """The second chart: entropy (mean + band) or top-1 agreement (%)."""
        d, sc = self._data, self._charts["second"]
        rows, shown, which = d["rows"], d["lenses"], self.second_dropdown.value
        n, _, bos, band_label = self._context()
        ys = []
        for name in self._names:
            band, line = self._bands["second"][name], self._lines["second"][name]
            if name not in shown:
                update(band, visible=False)
                update(line, visible=False)
                continue
            if which == "entropy":
                s = d["entropy"][name]
                lo, hi = self._band(s)
                update(band, x=rows, y=np.stack([lo, hi]), visible=True)
                y = s["mean"]
            else:
                update(band, visible=False)
                y = d["agreement"][name]["pct"]
            update(line, x=rows, y=y, visible=True)
            ys.append(y)
        sc.set_dots(rows, ys, shown, [self._colors[k] for k in shown])
        if which == "entropy":
            sc.title = f"Lens entropy by layer: mean over {n} positions ({bos}); the output row is the model's own"
            sc.y_axis.label = "entropy, nats"
            sc.set_legend((f"{k} lens: mean, band {band_label}", self._colors[k], "solid", "band") for k in shown)
        else:
            sc.title = f"Top-1 agreement: % of {n} positions whose lens top-1 is the model's own top-1 ({bos})"
            sc.y_axis.label = "% of positions"
            sc.set_legend((f"{k} lens", self._colors[k], "solid", "line") for k in shown)

    def _draw_availability(self) -> None:
        d = self._data
        ok = ", ".join(d["lenses"])
        if not self._unavailable:
            self.availability.value = ""
            return
        missing = "".join(
            f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in self._unavailable.items()
        )
        self.availability.value = (
            '<div style="color:var(--jp-warn-color1, #b26a00);font-size:12px;overflow-wrap:anywhere">'
            f"Shown: {html.escape(ok)}. Unavailable for this model (fit or load one — "
            "<code>session.fit_lens(kind, prompts)</code> / <code>session.load_lens(path)</code> — then press recompute):"
            f"<ul style='margin:2px 0 0 0'>{missing}</ul></div>"
        )

    def _draw_table(self) -> None:
        d = self._data
        shown = d["lenses"]
        cols = ["layer"] + [f"{k} KL mean (median)" for k in shown] + [f"{k} top-1 %" for k in shown]
        body = []
        for r, lab in zip(d["rows"], d["row_labels"]):
            body.append(
                [lab]
                + [f"{d['kl'][k]['mean'][r]:.3f} ({d['kl'][k]['median'][r]:.3f})" for k in shown]
                + [f"{d['agreement'][k]['pct'][r]:.1f}" for k in shown]
            )
        n = d["kl"][shown[0]]["n"]
        caption = f"KL(model output ‖ lens) in nats and top-1 agreement, over {n} positions of {len(d['prompts'])} prompt(s)"
        self.table.value = table_html(cols, body, caption=caption)


__all__ = ["DEFAULT_PROMPTS", "LENS_COLORS", "LensKLExplorer"]
