"""``LogitDiffExplorer`` (seed 001): answer vs counterfactual logit difference through the layers.

For prompt p with answer a_p and counterfactual c_p, at every residual row r and the prompt's last
*real* token t_p: ``diff[p, r] = z_{a_p}(r, t_p) - z_{c_p}(r, t_p)`` where ``z = LN_final(resid) @ W_U + b_U``
(each row normalised with its own statistics). Prompts run as one right-padded batch
(``Session.analyze_batch``), so prompts of different lengths read their own last token (the pitfall
seed 001 ran into with left padding).
"""

from __future__ import annotations

from typing import Any, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

from resid_widgets.analyses.workflows import (
    display_token,
    last_token_logit_diff,
    last_token_ranks,
    mean_spread,
    per_prompt,
    per_prompt_rows,
    ranking_table,
)
from resid_widgets.widgets._charts import prompt_labels, table_html
from resid_widgets.widgets._explorer import (
    DASHES,
    ROW_LABEL,
    Chart,
    Explorer,
    check_index,
    colors,
    dashes,
    dropdown,
    fit_dropdown,
    legend_html,
    log_ticks,
    flow_row,
    status_line,
    update,
)
from resid_widgets.widgets.resid import as_session

#: capital after a full stop, on prose the demo model knows
DEFAULT_PROMPTS = ["It was a fine morning.", "She said nothing.", "Mr. Darcy bowed."]
DEFAULT_ANSWER, DEFAULT_COUNTERFACTUAL = " The", " the"


class LogitDiffExplorer(Explorer):
    """Logit difference by layer at each prompt's last real token, for one prompt or a batch.

    ``LogitDiffExplorer(session, prompts, answers=" It", counterfactuals=" it")``; ``answers`` and
    ``counterfactuals`` are one token string each, or one per prompt (each must be a single token).
    Shows

    * the logit difference by layer row: the mean over prompts with a ± 1 s.d. band, or one line per prompt
      (toggle ``mode``);
    * the rank of the answer by layer row (log scale, 1 = top);
    * a ranking table of the final top-k at the last token of the selected prompt (rank, logit, prob, token),
      like TransformerLens's ``test_prompt``; token text is HTML-escaped and newlines shown as ``\\n``.

    Numbers: ``data()`` (numpy), ``ranking(i)`` and ``to_dataframe()`` (DataFrames).
    """

    def __init__(
        self,
        model_or_session: Any = None,
        prompts: str | Sequence[str] | None = None,
        answers: str | Sequence[str] | None = None,
        counterfactuals: str | Sequence[str] | None = None,
        *,
        mode: str = "mean",
        top_k: int = 10,
        device: str | None = None,
    ):
        self.session = as_session(model_or_session, device=device)
        self.top_k = int(top_k)
        self.mode_toggle = W.ToggleButtons(
            options=[("mean ± s.d.", "mean"), ("per prompt", "lines")], value=mode, description="show"
        )
        self.prompt_select = dropdown([("-", 0)], 0, "table for")
        self.table = W.HTML(layout=W.Layout(width="auto", max_width="100%"))
        self.status = status_line()
        self._set(prompts if prompts is not None else DEFAULT_PROMPTS,
                  DEFAULT_ANSWER if answers is None else answers,
                  DEFAULT_COUNTERFACTUAL if counterfactuals is None else counterfactuals)
        self._start(
            lambda ch: [
                self.mode_toggle,
                self.legend,
                flow_row(ch["logit_diff"].widget, ch["rank"].widget),
                self.prompt_select,
                self.table,
            ],
            compute=False,
        )
        self.mode_toggle.observe(self._guard(self._draw), "value")
        self.prompt_select.observe(self._guard(self._draw_table), "value")

    # ---- public API -----------------------------------------------------------------------------

    def series_lines(self, figure: str = "logit_diff") -> np.ndarray:
        """[P, R]: the per-prompt lines as drawn (gathered from the line-style marks), in prompt order."""
        marks = self._diff_lines if figure == "logit_diff" else self._rank_lines
        P = len(self._data["labels"])
        out = [None] * P
        for style, mark in zip(DASHES, marks):
            idx = [i for i, s in enumerate(dashes(P)) if s == style]
            for i, y in zip(idx, np.atleast_2d(np.asarray(mark.y, dtype=np.float64))[: len(idx)]):
                out[i] = y
        return np.stack(out)

    @property
    def analyses(self) -> list:
        return list(self._analyses)

    def set_prompts(self, prompts, answers=None, counterfactuals=None) -> None:
        """New prompts (and optionally answers / counterfactuals); the charts update in place."""
        self._set(
            prompts,
            self._answers_arg if answers is None else answers,
            self._cf_arg if counterfactuals is None else counterfactuals,
        )
        self._draw()

    def data(self) -> dict[str, Any]:
        """``logit_diff`` / ``answer_rank`` [P, R], ``mean`` / ``std`` [R] and the prompts' labels and targets."""
        return dict(self._data)

    def ranking(self, i: int = 0, *, row: int = -1):
        """DataFrame of the lens top-k at prompt i's last real token (default: the final row)."""
        i = check_index("prompt index i", i, len(self._analyses))
        R = self._analyses[i].n_rows
        if row != -1:
            row = check_index("row", row, R, " (0 = embeddings, r = after layer r - 1; -1 = the final row)")
        return ranking_table(self._analyses[i], row=row, pos=-1)

    def _compute(self) -> None:
        self._set(self._prompts_arg, self._answers_arg, self._cf_arg)

    def to_dataframe(self):
        """Long format: one row per (prompt, row)."""
        d = self._data
        P, R = d["logit_diff"].shape
        return per_prompt_rows(
            d["labels"],
            d["prompts"],
            R,
            answer=np.repeat(d["answers"], R),
            counterfactual=np.repeat(d["counterfactuals"], R),
            logit_diff=d["logit_diff"],
            answer_rank=d["answer_rank"],
        )

    # ---- computation ----------------------------------------------------------------------------
    def _set(self, prompts, answers, counterfactuals) -> None:
        labels, plist = prompt_labels(prompts)
        ans = per_prompt(answers, len(plist), "answers")
        cfs = per_prompt(counterfactuals, len(plist), "counterfactuals")
        targets = list(dict.fromkeys(list(ans) + list(cfs)))
        analyses = self.session.analyze_batch(plist, top_k=self.top_k, targets=targets)
        # target_index looks names up as given; ids given as ints are resolved by the session
        ans = [analyses[0].targets[targets.index(a)] for a in ans]
        cfs = [analyses[0].targets[targets.index(c)] for c in cfs]
        diff = last_token_logit_diff(analyses, ans, cfs)
        ranks = last_token_ranks(analyses, ans)
        mean, std = mean_spread(diff, axis=0)
        self._analyses = analyses
        self._prompts_arg, self._answers_arg, self._cf_arg = prompts, answers, counterfactuals
        self._data = {
            "labels": labels,
            "prompts": plist,
            "answers": ans,
            "counterfactuals": cfs,
            "last_pos": np.array([a.n_tokens - 1 for a in analyses]),
            "logit_diff": diff,
            "mean": mean,
            "std": std,
            "answer_rank": ranks,
        }
        options = [(f"{i}: {l}", i) for i, l in enumerate(labels)]
        keep = self.prompt_select.value if self.prompt_select.value < len(options) else 0
        with self.prompt_select.hold_trait_notifications():
            self.prompt_select.options = options
            self.prompt_select.value = keep
        fit_dropdown(self.prompt_select)

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.legend = W.HTML("", layout=W.Layout(margin="0 4px"))
        self.legend.add_class("rw-legend")
        mean_color = "#4e79a7"
        c = Chart(
            "Logit difference at the last real token", ROW_LABEL, "logit(answer) − logit(cf.)",
            tooltip_fields=("row", "logit diff"), tooltip_format=".3f", rows=True,
        )
        # one multi-line mark per line style: prompt i is drawn in colour i and style dashes(P)[i]
        self._diff_lines = [bq.Lines(x=[0], y=[0], scales=c.scales, line_style=s, stroke_width=2, visible=False) for s in DASHES]
        self._band = bq.Lines(
            x=[0], y=[0], scales=c.scales, fill="between", fill_opacities=[0.25], fill_colors=[mean_color],
            colors=["transparent"], stroke_width=0,
        )
        self._mean = bq.Lines(x=[0], y=[0], scales=c.scales, colors=[mean_color], stroke_width=3)
        self._zero = bq.Lines(x=[0, 1], y=[0, 0], scales=c.scales, colors=["#888888"], line_style="dotted")
        c.figure.marks = [*self._diff_lines, self._band, self._mean, self._zero]
        r = Chart(
            "Rank of the answer (1 = top)", ROW_LABEL, "rank + 1 (log scale)", y_scale=bq.LogScale(),
            tooltip_fields=("row", "rank + 1"), tooltip_format="d", rows=True,
        )
        self._rank_lines = [bq.Lines(x=[0], y=[1], scales=r.scales, line_style=s, stroke_width=2, visible=False) for s in DASHES]
        r.figure.marks = list(self._rank_lines)
        self._charts = {"logit_diff": c, "rank": r}
        self.fig_diff, self.fig_rank = c.figure, r.figure
        self._mean_color = mean_color

    def _draw(self) -> None:
        d = self._data
        diff, ranks = d["logit_diff"], d["answer_rank"]
        P, R = diff.shape
        rows = np.arange(R)
        c, r = self._charts["logit_diff"], self._charts["rank"]
        c.set_rows(rows)
        r.set_rows(rows)
        cols, styles = colors(P), dashes(P)
        names = [f"{l} ({a!r} vs {cf!r})" for l, a, cf in zip(d["labels"], d["answers"], d["counterfactuals"])]
        per_prompt_mode = self.mode_toggle.value == "lines"
        for style, dl, rl in zip(DASHES, self._diff_lines, self._rank_lines):
            idx = [i for i, s in enumerate(styles) if s == style]
            if idx:
                update(dl, x=rows, y=diff[idx], colors=[cols[i] for i in idx], visible=per_prompt_mode)
                update(rl, x=rows, y=(ranks[idx] + 1).astype(np.float64), colors=[cols[i] for i in idx], visible=True)
            else:
                update(dl, visible=False)
                update(rl, visible=False)
        update(self._band, x=rows, y=np.stack([d["mean"] - d["std"], d["mean"] + d["std"]]), visible=not per_prompt_mode and P > 1)
        update(self._mean, x=rows, y=d["mean"], visible=not per_prompt_mode)
        update(self._zero, x=[0, R - 1])
        if per_prompt_mode:
            c.set_dots(rows, list(diff), names, cols)
            c.set_legend([])
        elif P == 1:  # one prompt: its own line (a mean of one with a zero-width band would say nothing)
            c.set_dots(rows, [d["mean"]], names, [self._mean_color])
            c.set_legend([(names[0], self._mean_color, "solid", "line")])
        else:
            c.set_dots(rows, [d["mean"]], [f"mean of {P} prompts"], [self._mean_color])
            c.set_legend([(f"mean of {P} prompts ± 1 s.d.", self._mean_color, "solid", "band")])
        r.set_dots(rows, list((ranks + 1).astype(np.float64)), names, cols)
        r.y_axis.tick_values = log_ticks(1, max(2.0, float(ranks.max() + 1)))
        r.y_axis.tick_format = ",~g"
        self.legend.value = legend_html((n, col, s, "line") for n, col, s in zip(names, cols, styles))
        self._draw_table()

    def _draw_table(self) -> None:
        d = self._data
        i = int(self.prompt_select.value)
        a = self._analyses[i]
        df = self.ranking(i)
        answer, cf = d["answers"][i], d["counterfactuals"][i]
        rows = [
            (int(r.rank), f"{r.logit:.2f}", f"{100 * r.prob:.2f}%", f"|{display_token(r.token)}|")
            for r in df.itertuples()
        ]
        R = a.n_rows
        ja, jc = a.target_index(answer), a.target_index(cf)
        extra = [
            (int(a.target_ranks[R - 1, -1, j]), f"{a.target_logits[R - 1, -1, j]:.2f}",
             f"{100 * a.target_probs[R - 1, -1, j]:.2f}%", f"|{display_token(name)}| ({role})")
            for j, name, role in ((ja, answer, "answer"), (jc, cf, "counterfactual"))
        ]
        caption = (
            f"{d['labels'][i]} — last token |{display_token(a.tokens[-1])}| (position {a.n_tokens - 1}), final row; "
            f"logit diff {d['logit_diff'][i, -1]:.3f}"
        )
        self.table.value = table_html(["rank", "logit", "prob", "token"], rows + extra, caption=caption)


__all__ = ["LogitDiffExplorer"]
