"""Numbers behind ``LensKLExplorer``: how well each lens reads the model's output, row by row, over a prompt set.

Plain functions over ``Analysis`` objects (each read with one lens: ``Session.analyze_batch(prompts,
lens=kind)``). Per residual row r they pool the cells of every kept position of every prompt (padding
never enters: each ``Analysis`` holds exactly its real tokens; BOS is dropped with ``exclude_bos``, the
one mask of ``workflows.position_mask``) and summarise:

* ``kl_by_row``: ``KL(model output ‖ lens)`` in nats (``Analysis.kl_to_output``): mean, population s.d.,
  quartiles (numpy's linear interpolation), median, and n, the number of pooled positions;
* ``entropy_by_row``: the lens distribution's entropy in nats, the same statistics;
* ``top1_agreement_by_row``: the percentage of positions where the model's own final top-1 token is also
  the lens's top-1 (``final_top1_rank == 0``), and the median of that rank.

Rows follow ``Session``: row 0 = embeddings, row l+1 = after layer l; the last row is the model's own
output (KL 0, agreement 100 %).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from resid_widgets.analyses.rows import row_labels
from resid_widgets.analyses.workflows import mean_spread, position_mask

STATS = ("mean", "std", "q25", "median", "q75")


def _check(analyses: Sequence[Any]) -> list[Any]:
    analyses = list(analyses)
    if not analyses:
        raise ValueError("no analyses: give at least one (Session.analyze_batch(prompts, lens=...))")
    lenses = {str(a.lens) for a in analyses}
    if len(lenses) > 1:
        raise ValueError(f"the analyses were read with different lenses ({', '.join(sorted(lenses))}); pool one lens at a time")
    rows = {a.n_rows for a in analyses}
    if len(rows) > 1:
        raise ValueError(f"the analyses have different numbers of rows ({sorted(rows)}): one model at a time")
    for a in analyses:
        if not a.complete:
            raise ValueError("an analysis still has unread lens cells (a streamed analysis in progress); wait for it")
    return analyses


def pooled(analyses: Sequence[Any], field: str, *, exclude_bos: bool = True) -> np.ndarray:
    """[R, N] float64: ``analysis.<field>`` ([R, T] per analysis) at the N kept positions of all analyses."""
    analyses = _check(analyses)
    return np.concatenate(
        [np.asarray(getattr(a, field), dtype=np.float64)[:, position_mask(a, exclude_bos)] for a in analyses], axis=1
    )


def row_stats(values: np.ndarray) -> dict[str, Any]:
    """Mean, population s.d., quartiles and median along axis 1 of ``values`` [R, N], and n = N."""
    values = np.asarray(values, dtype=np.float64)
    mean, std = mean_spread(values, axis=1)
    q25, median, q75 = np.percentile(values, [25, 50, 75], axis=1)
    return {"mean": mean, "std": std, "q25": q25, "median": median, "q75": q75, "n": int(values.shape[1])}


def kl_by_row(analyses: Sequence[Any], exclude_bos: bool = True) -> dict[str, Any]:
    """``KL(model output ‖ lens)`` per row over the kept positions: ``dict(mean, std, q25, median, q75)`` [R] and n."""
    return row_stats(pooled(analyses, "kl_to_output", exclude_bos=exclude_bos))


def entropy_by_row(analyses: Sequence[Any], exclude_bos: bool = True) -> dict[str, Any]:
    """The lens distribution's entropy (nats) per row over the kept positions: the same statistics as ``kl_by_row``."""
    return row_stats(pooled(analyses, "entropy", exclude_bos=exclude_bos))


def top1_agreement_by_row(analyses: Sequence[Any], exclude_bos: bool = True) -> dict[str, Any]:
    """``pct`` [R]: % of kept positions whose lens top-1 is the model's final top-1; ``median_rank`` [R]; n."""
    ranks = pooled(analyses, "final_top1_rank", exclude_bos=exclude_bos)
    return {"pct": 100.0 * (ranks == 0).mean(axis=1), "median_rank": np.median(ranks, axis=1), "n": int(ranks.shape[1])}


def lens_comparison(analyses_by_lens: Mapping[str, Sequence[Any]], *, exclude_bos: bool = True) -> dict[str, Any]:
    """Every number of ``LensKLExplorer``: ``{name: analyses}`` (one lens each, the same prompts) ->
    ``kl`` / ``entropy`` / ``agreement`` as ``{name: stats}``, the rows and their labels."""
    if not analyses_by_lens:
        raise ValueError("no lens to compare")
    names = list(analyses_by_lens)
    n_rows = {_check(a)[0].n_rows for a in analyses_by_lens.values()}
    if len(n_rows) > 1:
        raise ValueError("the lenses' analyses have different numbers of rows: one model at a time")
    R = n_rows.pop()
    return {
        "lenses": names,
        "exclude_bos": bool(exclude_bos),
        "rows": np.arange(R),
        "row_labels": row_labels(R),
        "kl": {n: kl_by_row(analyses_by_lens[n], exclude_bos) for n in names},
        "entropy": {n: entropy_by_row(analyses_by_lens[n], exclude_bos) for n in names},
        "agreement": {n: top1_agreement_by_row(analyses_by_lens[n], exclude_bos) for n in names},
    }


def comparison_table(comparison: Mapping[str, Any]):
    """Long-format DataFrame, one row per (lens, residual row): the KL and entropy statistics, the top-1 agreement."""
    import pandas as pd

    frames = []
    rows = comparison["rows"]
    for name in comparison["lenses"]:
        kl, ent, agr = comparison["kl"][name], comparison["entropy"][name], comparison["agreement"][name]
        table = {"lens": name, "row": rows, "layer": rows - 1, "row_label": comparison["row_labels"]}
        table.update({f"kl_{s}": kl[s] for s in STATS})
        table.update({f"entropy_{s}": ent[s] for s in STATS})
        table.update(top1_agreement_pct=agr["pct"], final_top1_median_rank=agr["median_rank"], n_positions=kl["n"])
        frames.append(pd.DataFrame(table))
    return pd.concat(frames, ignore_index=True)


__all__ = [
    "STATS",
    "comparison_table",
    "entropy_by_row",
    "kl_by_row",
    "lens_comparison",
    "pooled",
    "row_labels",
    "row_stats",
    "top1_agreement_by_row",
]
