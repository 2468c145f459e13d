"""Numbers behind the seed workflows' explorers (seeds 000, 001, 004 and the A/B comparison).

Plain functions over ``Analysis`` objects (or their arrays) returning numpy / pandas; the widgets
in ``resid_widgets.widgets`` only lay these out and plot them. Conventions:

* rows r = 0..R-1 are residual points (row 0 = embeddings, row l+1 = after layer l); attention /
  MLP outputs have L = R - 1 rows (layer l's output is added to reach row l+1);
* "last position" is each analysis' last token; with ``Session.analyze_batch`` every ``Analysis``
  holds exactly its real tokens, so this is the last *real* token whatever the padding;
* "mean over positions" excludes the BOS position when ``exclude_bos`` is true (unless the prompt
  is nothing but BOS);
* spreads are population standard deviations (``ddof=0``); a single value has spread 0.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from resid_widgets.analyses.rows import row_labels
from resid_widgets.payload.arrays import metric_values as _metric_values
from resid_widgets.payload.protocol import METRIC_SPECS, METRICS

# ---- tables -------------------------------------------------------------------------------------


def per_prompt_rows(labels: Sequence[str], prompts: Sequence[str], n_rows: int, **columns: Any):
    """Long-format DataFrame, one row per (prompt, residual row); ``columns`` are [P, R] arrays or scalars."""
    import pandas as pd

    P = len(prompts)
    table: dict[str, Any] = {
        "label": np.repeat(np.asarray(labels, dtype=object), n_rows),
        "prompt": np.repeat(np.asarray(prompts, dtype=object), n_rows),
        "row": np.tile(np.arange(n_rows), P),
        "layer": np.tile(np.arange(n_rows), P) - 1,
        # the one layer numbering (embed, 0, 1, ...), ordered as the rows are (a pivot keeps this order)
        "row_label": pd.Categorical(np.tile(row_labels(n_rows), P), categories=row_labels(n_rows), ordered=True),
    }
    for name, value in columns.items():
        table[name] = np.asarray(value).reshape(-1) if np.ndim(value) == 2 else value
    return pd.DataFrame(table)


# ---- positions ----------------------------------------------------------------------------------


def position_mask(analysis: Any, exclude_bos: bool) -> np.ndarray:
    """[T] bool: the positions that count in a mean over positions (the one place BOS is masked)."""
    keep = np.ones(analysis.n_tokens, dtype=bool)
    if exclude_bos:
        keep &= ~np.asarray(analysis.is_bos, dtype=bool)
    if not keep.any():
        keep[:] = True
    return keep


def n_leading_bos(analysis: Any) -> int:
    """1 when the analysis starts with a prepended BOS token, else 0."""
    return 1 if analysis.n_tokens and bool(np.asarray(analysis.is_bos)[0]) else 0


def token_char_spans(
    tokens: Sequence[str],
    text: str,
    *,
    n_skip: int = 0,
    decode: Callable[[int], str] | None = None,
) -> np.ndarray:
    """[T, 2] character span ``[start, end)`` of every token in ``text``.

    The first ``n_skip`` tokens (a prepended BOS) have the empty span ``[0, 0)``. The spans are the
    cumulative lengths of the token strings, which is exact when the token strings concatenate to
    ``text`` (byte-level BPE decodes each token to its own text). When they do not (a character split
    across tokens decodes to U+FFFD), ``decode(n)`` (the text of the first n real tokens) is used for
    the cumulative lengths instead; without it a ValueError is raised.
    """
    real = list(tokens[n_skip:])
    if "".join(real) == text:
        ends = np.cumsum([len(t) for t in real], dtype=np.int64)
    elif decode is not None:
        ends = np.array([len(decode(n + 1)) for n in range(len(real))], dtype=np.int64)
        ends = np.maximum.accumulate(ends) if len(ends) else ends
    else:
        raise ValueError("the token strings do not concatenate to the text; pass decode= to map characters to tokens")
    starts = np.concatenate([[0], ends[:-1]]) if len(ends) else ends
    spans = np.zeros((len(tokens), 2), dtype=np.int64)
    spans[n_skip:, 0] = starts
    spans[n_skip:, 1] = ends
    return spans


def char_to_token(spans: np.ndarray, char: int, *, n_skip: int = 0) -> int:
    """The token position whose span contains character ``char`` (the last token if past the end)."""
    ends = spans[n_skip:, 1]
    if len(ends) == 0:
        raise ValueError("no real tokens")
    idx = int(np.searchsorted(ends, char, side="right"))
    return n_skip + min(idx, len(ends) - 1)


def marker_positions(
    text: str,
    tokens: Sequence[str],
    markers: Sequence[str] | Mapping[str, str] | None,
    *,
    n_skip: int = 0,
    decode: Callable[[int], str] | None = None,
):
    """One row per marker: ``name``, ``substring``, ``char`` (first occurrence, -1 if absent) and
    ``pos``, the token position whose character span contains the substring's first character (-1 if absent).

    ``markers`` is a list of substrings (each its own name) or a ``{name: substring}`` mapping.
    """
    import pandas as pd

    items = list(markers.items()) if isinstance(markers, Mapping) else [(m, m) for m in (markers or [])]
    spans = token_char_spans(tokens, text, n_skip=n_skip, decode=decode) if items else None
    rows = []
    for name, sub in items:
        char = text.find(sub) if sub else -1
        pos = char_to_token(spans, char, n_skip=n_skip) if char >= 0 else -1
        rows.append({"name": str(name), "substring": sub, "char": char, "pos": pos})
    return pd.DataFrame(rows, columns=["name", "substring", "char", "pos"])


# ---- seed 000: projection -----------------------------------------------------------------------


def layer_profile(analysis: Any, values: np.ndarray, *, exclude_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    """``values`` [rows, T] -> (mean over positions [rows], value at the last position [rows])."""
    keep = position_mask(analysis, exclude_bos)
    values = np.asarray(values, dtype=np.float64)
    return values[:, keep].mean(axis=1), values[:, -1]


def mean_spread(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation along ``axis``."""
    values = np.asarray(values, dtype=np.float64)
    return values.mean(axis=axis), values.std(axis=axis)


def group_stats(values: Mapping[str, Sequence[float]]):
    """``{group: per-prompt values}`` -> DataFrame with ``group``, ``mean``, ``std``, ``n``."""
    import pandas as pd

    rows = []
    for name, vals in values.items():
        v = np.asarray(vals, dtype=np.float64)
        rows.append({"group": name, "mean": float(v.mean()), "std": float(v.std()), "n": int(v.size)})
    return pd.DataFrame(rows, columns=["group", "mean", "std", "n"])


def projection_workflow(
    subspace: Any,
    layer_analyses: Sequence[Any],
    position_analysis: Any,
    groups: Mapping[str, Sequence[Any]],
    *,
    tau: float,
    exclude_bos: bool,
    row: int | str,
    group_position: str,
    markers: Sequence[str] | Mapping[str, str] | None,
    decode: Callable[[Sequence[int]], str] | None = None,
) -> dict[str, Any]:
    """Every number of ``ProjectionExplorer`` (seed 000) from stored analyses; no forward pass.

    ``layer_analyses``: the prompts compared by layer; ``position_analysis``: the prompt shown over
    positions at ``row`` (an index, or ``"final"`` for ``ln_final.hook_normalized``); ``groups``:
    ``{name: analyses}``, each summarised by its final projection % at the last position
    (``group_position="last"``) or its mean over positions. ``decode(ids)`` maps token ids to text for
    the markers when token strings do not concatenate to the prompt.
    """
    k = subspace.k_for_tau(tau)
    means, lasts, conc, final_last = [], [], [], []
    for a in layer_analyses:
        mean, last = layer_profile(a, a.projection_at(tau), exclude_bos=exclude_bos)
        c_mean, _ = layer_profile(a, a.concentration_index(), exclude_bos=exclude_bos)
        means.append(mean)
        lasts.append(last)
        conc.append(c_mean)
        final_last.append(float(a.projection_final_at(tau)[-1]))
    ap = position_analysis
    pos_pct = ap.projection_final_at(tau) if row == "final" else ap.projection_at(tau)[row]
    n_skip = n_leading_bos(ap)
    real_ids = ap.token_ids[n_skip:].tolist()
    dec = None if decode is None else (lambda n: decode(real_ids[:n]))
    found = marker_positions(ap.prompt, ap.tokens, markers, n_skip=n_skip, decode=dec)
    values = {}
    for name, analyses in groups.items():
        vals = []
        for a in analyses:
            final = a.projection_final_at(tau)
            if group_position == "last":
                vals.append(float(final[-1]))
            else:
                vals.append(float(layer_profile(a, final[None], exclude_bos=exclude_bos)[0][0]))
        values[name] = vals
    stats = group_stats(values)
    return {
        "tau": float(tau),
        "k": int(k),
        "singular_values": np.asarray(subspace.singular_values, dtype=np.float64),
        "cumulative_energy": np.asarray(subspace.cumulative_energy, dtype=np.float64),
        "layer_mean": np.stack(means),
        "layer_last": np.stack(lasts),
        "concentration_mean": np.stack(conc),
        "final_last": np.asarray(final_last),
        "position_prompt": ap.prompt,
        "position_row": row,
        "position_pct": np.asarray(pos_pct, dtype=np.float64),
        "position_tokens": list(ap.tokens),
        "position_is_bos": np.asarray(ap.is_bos, dtype=bool),
        "markers": found,
        "group_values": values,
        "groups": stats,
        "group_mean": stats["mean"].to_numpy(),
        "group_std": stats["std"].to_numpy(),
    }


# ---- seed 001: logit difference -----------------------------------------------------------------


def per_prompt(value: Any, n: int, name: str) -> list:
    """A single value repeated for n prompts, or a list that must have n entries."""
    if isinstance(value, (str, int, np.integer)):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"got {len(value)} {name} for {n} prompts; give one, or one per prompt")
    return value


def last_token_logit_diff(analyses: Sequence[Any], answers: Sequence, counterfactuals: Sequence) -> np.ndarray:
    """[P, R]: ``logit(answer_p) - logit(counterfactual_p)`` at each prompt's last real token, every row."""
    return np.stack(
        [a.logit_diff(ans, cf)[:, -1] for a, ans, cf in zip(analyses, answers, counterfactuals)]
    ).astype(np.float64)


def last_token_ranks(analyses: Sequence[Any], answers: Sequence) -> np.ndarray:
    """[P, R]: rank of each prompt's answer at its last real token (0 = top)."""
    return np.stack([a.target_ranks[:, -1, a.target_index(ans)] for a, ans in zip(analyses, answers)]).astype(np.int64)


def display_token(text: str) -> str:
    """Token text with invisible characters made visible (newline -> ``\\n``); not HTML-escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def ranking_table(analysis: Any, *, row: int = -1, pos: int = -1):
    """The lens top-k at one row and position, like TransformerLens's ``test_prompt``.

    Columns: ``rank`` (0 = top), ``logit``, ``prob``, ``token`` (text), ``token_id``.
    """
    import pandas as pd

    ids = analysis.top_ids[row, pos]
    return pd.DataFrame(
        {
            "rank": np.arange(len(ids)),
            "logit": analysis.top_logits[row, pos].astype(np.float64),
            "prob": analysis.top_probs[row, pos].astype(np.float64),
            "token": [analysis.strings[int(i)] for i in ids],
            "token_id": ids.astype(np.int64),
        }
    )


# ---- seed 004: attention vs MLP norms -----------------------------------------------------------


def pooled_norms(analyses: Sequence[Any], *, exclude_bos: bool) -> tuple[np.ndarray, np.ndarray]:
    """(attn [L, N], mlp [L, N]): the output norms at the N real positions of all prompts.

    Each ``Analysis`` holds exactly its real tokens, so padding never enters; with ``exclude_bos``
    the BOS positions are dropped.
    """
    attn, mlp = [], []
    for a in analyses:
        lacking = (a.info.get("lacks") or {}).get("sublayers")
        if lacking:  # a backend without the attention / MLP outputs: say so, never NaN histograms
            raise ValueError(f"attention / MLP output norms are unavailable on the {a.info.get('backend')} backend: {lacking}")
        keep = position_mask(a, exclude_bos)
        attn.append(np.asarray(a.attn_norm, dtype=np.float64)[:, keep])
        mlp.append(np.asarray(a.mlp_norm, dtype=np.float64)[:, keep])
    return np.concatenate(attn, axis=1), np.concatenate(mlp, axis=1)


def shared_histogram(attn: np.ndarray, mlp: np.ndarray, bins: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Histogram of all attention and MLP norms on shared bin edges: (edges [bins+1], attn counts, mlp counts)."""
    a = np.asarray(attn, dtype=np.float64).ravel()
    m = np.asarray(mlp, dtype=np.float64).ravel()
    both = np.concatenate([a, m])
    if both.size == 0:
        edges = np.linspace(0.0, 1.0, bins + 1)
    else:
        lo, hi = float(both.min()), float(both.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    return edges, np.histogram(a, edges)[0], np.histogram(m, edges)[0]


def contribution_workflow(
    analyses: Sequence[Any], *, exclude_bos: bool, bins: int, prompt_index: int, layer: int
) -> dict[str, Any]:
    """Every number of ``ContributionExplorer`` (seed 004): pooled attention / MLP output norms by layer
    (mean, spread, shared histogram) and one prompt's norms per position at one layer."""
    attn, mlp = pooled_norms(analyses, exclude_bos=exclude_bos)
    attn_mean, attn_std = mean_spread(attn, axis=1)
    mlp_mean, mlp_std = mean_spread(mlp, axis=1)
    edges, h_attn, h_mlp = shared_histogram(attn, mlp, bins)
    a = analyses[prompt_index]
    pos = np.nonzero(position_mask(a, exclude_bos))[0]
    return {
        "exclude_bos": bool(exclude_bos),
        "n_positions": int(attn.shape[1]),
        "attn": attn,
        "mlp": mlp,
        "attn_mean": attn_mean,
        "attn_std": attn_std,
        "mlp_mean": mlp_mean,
        "mlp_std": mlp_std,
        "hist_edges": edges,
        "hist_attn": h_attn,
        "hist_mlp": h_mlp,
        "prompt_index": int(prompt_index),
        "layer": int(layer),
        "positions": pos,
        "position_tokens": [a.tokens[p] for p in pos],
        "position_attn": np.asarray(a.attn_norm[layer, pos], dtype=np.float64),
        "position_mlp": np.asarray(a.mlp_norm[layer, pos], dtype=np.float64),
        "additivity": [dict(x.additivity) for x in analyses],
    }


# ---- A/B comparison -----------------------------------------------------------------------------

# the metric names are the widget protocol's (one list); these are the longer chart labels
#: long labels (chart titles) and short y-axis titles of every metric, from the registry (protocol.json)
METRIC_LABELS = {m: s.get("long_label", s["label"]) for m, s in METRIC_SPECS.items()}
METRIC_AXIS_LABELS = {m: s.get("axis_label", s["label"]) for m, s in METRIC_SPECS.items()}


def metric_values(analysis: Any, metric: str, *, answer=None, counterfactual=None) -> tuple[np.ndarray, np.ndarray]:
    """(rows [n], values [n, T]) of one metric: the registry's generic accessor (``payload/arrays.py``).
    Rows index the residual points: most metrics cover rows 0..R-1; ``attn_norm`` / ``mlp_norm`` cover
    rows 1..R-1 (layer l's output reaches row l+1)."""
    return _metric_values(analysis, metric, answer=answer, counterfactual=counterfactual)


def compare_metric(a: Any, b: Any, metric: str, *, answer=None, counterfactual=None, exclude_bos: bool = True) -> dict[str, np.ndarray]:
    """Per-row value at the last position and mean over positions for A and B, and B − A."""
    rows, va = metric_values(a, metric, answer=answer, counterfactual=counterfactual)
    _, vb = metric_values(b, metric, answer=answer, counterfactual=counterfactual)
    a_mean, a_last = layer_profile(a, va, exclude_bos=exclude_bos)
    b_mean, b_last = layer_profile(b, vb, exclude_bos=exclude_bos)
    return {
        "row": rows,
        "a_last": a_last,
        "b_last": b_last,
        "a_mean": a_mean,
        "b_mean": b_mean,
        "diff_last": b_last - a_last,
        "diff_mean": b_mean - a_mean,
    }


__all__ = [
    "METRICS",
    "METRIC_AXIS_LABELS",
    "METRIC_LABELS",
    "char_to_token",
    "compare_metric",
    "contribution_workflow",
    "display_token",
    "group_stats",
    "last_token_logit_diff",
    "last_token_ranks",
    "layer_profile",
    "marker_positions",
    "mean_spread",
    "metric_values",
    "per_prompt",
    "pooled_norms",
    "n_leading_bos",
    "position_mask",
    "projection_workflow",
    "ranking_table",
    "shared_histogram",
    "token_char_spans",
]
