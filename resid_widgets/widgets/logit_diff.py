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
from resid_widgets.widgets._charts import (
    colors,
    figure,
    guarded,
    point_tooltip,
    prompt_labels,
    row_ticks,
    series_points,
    status_line,
    table_html,
    update,
)
from resid_widgets.widgets.resid import as_session

#: capital after a full stop, on prose the demo model knows
DEFAULT_PROMPTS = ["It was a fine morning.", "She said nothing.", "Mr. Darcy bowed."]
DEFAULT_ANSWER, DEFAULT_COUNTERFACTUAL = " The", " the"


class LogitDiffExplorer(W.VBox):
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
        self.prompt_select = W.Dropdown(options=[("-", 0)], value=0, description="table for")
        self.table = W.HTML()
        self.status = status_line()
        self._set(prompts if prompts is not None else DEFAULT_PROMPTS,
                  DEFAULT_ANSWER if answers is None else answers,
                  DEFAULT_COUNTERFACTUAL if counterfactuals is None else counterfactuals)
        self._build()
        self._draw()
        self.mode_toggle.observe(lambda _: guarded(self.status, self._draw), "value")
        self.prompt_select.observe(lambda _: guarded(self.status, self._draw_table), "value")
        wrap = W.Layout(flex_flow="row wrap", width="100%")
        super().__init__(
            children=[
                self.mode_toggle,
                W.HBox([self.fig_diff, self.fig_rank], layout=wrap),
                self.prompt_select,
                self.table,
                self.status,
            ]
        )

    # ---- public API -----------------------------------------------------------------------------
    @property
    def figures(self) -> dict[str, bq.Figure]:
        return {"logit_diff": self.fig_diff, "rank": self.fig_rank}

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
        return ranking_table(self._analyses[i], row=row, pos=-1)

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
        self._answers_arg, self._cf_arg = answers, counterfactuals
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

    # ---- charts ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.fig_diff, s = figure(
            "Logit difference at the last real token", "row (0 = embeddings, l+1 = after layer l)",
            "logit(answer) − logit(counterfactual)", legend=True,
        )
        self._lines = bq.Lines(x=[0], y=[0], scales=s, display_legend=True)
        self._band = bq.Lines(
            x=[0], y=[0], scales=s, fill="between", fill_opacities=[0.25], fill_colors=[colors(1)[0]],
            colors=["transparent"], stroke_width=0,
        )
        self._mean = bq.Lines(x=[0], y=[0], scales=s, colors=[colors(1)[0]], stroke_width=3, labels=["mean"], display_legend=True)
        self._zero = bq.Lines(x=[0, 1], y=[0, 0], scales=s, colors=["#888888"], line_style="dotted")
        self._diff_points = bq.Scatter(x=[0], y=[0], scales=s, default_size=28, tooltip=point_tooltip("row", "logit diff", ".3f"))
        self.fig_diff.marks = [self._lines, self._band, self._mean, self._zero, self._diff_points]

        self.fig_rank, s = figure(
            "Rank of the answer (1 = top)", "row", "rank + 1 (log)", y_scale=bq.LogScale(), legend=True
        )
        self._rank_lines = bq.Lines(x=[0], y=[1], scales=s, display_legend=True, marker="circle", marker_size=16)
        self._rank_points = bq.Scatter(x=[0], y=[1], scales=s, default_size=28, tooltip=point_tooltip("row", "rank + 1", "d"))
        self.fig_rank.marks = [self._rank_lines, self._rank_points]

    def _draw(self) -> None:
        d = self._data
        diff, ranks = d["logit_diff"], d["answer_rank"]
        P, R = diff.shape
        rows = np.arange(R)
        row_ticks(self.fig_diff, rows)
        row_ticks(self.fig_rank, rows)
        cols = colors(P)
        names = [f"{l} ({a!r} vs {c!r})" for l, a, c in zip(d["labels"], d["answers"], d["counterfactuals"])]
        per_prompt_mode = self.mode_toggle.value == "lines"
        update(self._lines, x=rows, y=diff, colors=cols, labels=names, visible=per_prompt_mode)
        update(self._band, x=rows, y=np.stack([d["mean"] - d["std"], d["mean"] + d["std"]]), visible=not per_prompt_mode)
        update(self._mean, x=rows, y=d["mean"], visible=not per_prompt_mode)
        update(self._zero, x=[0, R - 1])
        if per_prompt_mode:
            pts = series_points(rows, diff, names)
        else:
            pts = series_points(rows, d["mean"][None], [f"mean of {P} prompt(s)"])
            pts["names"] = [f"mean ± {s:.3f} (s.d.)" for s in d["std"]]
        update(self._diff_points, x=pts["x"], y=pts["y"], names=pts["names"], colors=pts["colors"], display_names=False)

        update(self._rank_lines, x=rows, y=ranks + 1, colors=cols, labels=names)
        pts = series_points(rows, ranks + 1, names)
        update(self._rank_points, x=pts["x"], y=pts["y"], names=pts["names"], colors=pts["colors"], display_names=False)
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
