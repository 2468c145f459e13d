"""One computation per payload array (``protocol.json`` ``arrays``): ``Analysis`` -> numpy values.

Each function takes the analysis, the positions to send (a slice of T) and an ``ArrayContext``, and
returns the array's values before the wire dtype is applied (``encode.py`` turns them into the
entry's dtype: ``index`` = uint16 while the vocabulary fits, else int32; ``float16`` clipped to its
range). ``metric_values`` (analyses/workflows.py) reads the same functions, so the heatmap, the
CompareWidget and the CLI show one definition of every metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from resid_widgets.analyses.projection import pct_at_k
from resid_widgets.payload.protocol import ARRAY_SPECS, GRID_SCALE, METRIC_SPECS, TAU_GRID, metric_spec


@dataclass(frozen=True)
class ArrayContext:
    """What an array's computation may need besides the analysis."""

    tau_grid: tuple[float, ...] = TAU_GRID
    answer: Any = None  # target name or id of logit_diff / per-target metrics (None: targets[0])
    counterfactual: Any = None  # (None: targets[1])


def _proj_grid(a, p: slice, ctx: ArrayContext) -> np.ndarray:
    grid = np.stack([pct_at_k(a._proj_cum[:, p], a.k_for_tau(t)) for t in ctx.tau_grid])  # [G, R, P]
    return np.clip(np.rint(grid * GRID_SCALE), 0, 255).astype(np.uint8)


def _logit_diff(a, p: slice, ctx: ArrayContext) -> np.ndarray:
    answer = a.targets[0] if ctx.answer is None else ctx.answer
    counterfactual = a.targets[1] if ctx.counterfactual is None else ctx.counterfactual
    return a.logit_diff(answer, counterfactual)[:, p]


#: array name -> computation (analysis, positions, ctx) -> values
ARRAY_COMPUTE: dict[str, Callable[[Any, slice, ArrayContext], np.ndarray]] = {
    "token_ids": lambda a, p, ctx: a.token_ids[p],
    "proj_pct": lambda a, p, ctx: a.projection_pct[:, p],
    "proj_grid": _proj_grid,
    "proj_final": lambda a, p, ctx: a.projection_final_pct[p],
    "resid_norm": lambda a, p, ctx: a.resid_norm[:, p],
    "attn_norm": lambda a, p, ctx: a.attn_norm[:, p],
    "mlp_norm": lambda a, p, ctx: a.mlp_norm[:, p],
    "emergence": lambda a, p, ctx: a.emergence_row[p],
    "top1_id": lambda a, p, ctx: a.top_ids[:, p, 0],
    "top1_prob": lambda a, p, ctx: a.top_probs[:, p, 0],
    "entropy": lambda a, p, ctx: a.entropy[:, p],
    "kl": lambda a, p, ctx: a.kl[:, p],
    "final_rank": lambda a, p, ctx: a.final_rank[:, p],
    "target_rank": lambda a, p, ctx: a.target_ranks[:, p],
    "target_prob": lambda a, p, ctx: a.target_probs[:, p],
    "logit_diff": _logit_diff,
    "target_emergence": lambda a, p, ctx: a.target_emergence[p],
    "top_ids": lambda a, p, ctx: a.top_ids[:, p],
    "top_probs": lambda a, p, ctx: a.top_probs[:, p],
}


def sent(name: str, a, *, full: bool = False) -> bool:
    """Whether array ``name`` travels with analysis ``a`` (its ``when`` rule)."""
    when = ARRAY_SPECS[name]["when"]
    if when == "targets":
        return bool(a.targets)
    if when == "two_targets":
        return len(a.targets) >= 2
    if when == "full":
        return full
    if when == "sublayers":  # not computed by a backend that lacks them (NaN would travel as numbers)
        return when not in (a.info.get("lacks") or {})
    return True


def metric_available(name: str, a) -> bool:
    """The metric's availability rule (``needs``) for analysis ``a``."""
    needs = metric_spec(name)["needs"]
    if needs in (a.info.get("lacks") or {}):
        return False
    return not (needs == "targets" and not a.targets) and not (needs == "two_targets" and len(a.targets) < 2)


def metric_lacking(name: str, lacks: dict[str, str] | None) -> str | None:
    """Why metric ``name`` cannot be computed by a backend lacking ``lacks`` ({need: reason}); None: it can."""
    spec = METRIC_SPECS.get(name)
    return None if spec is None else (lacks or {}).get(spec["needs"])


def metric_rows(name: str, n_rows: int) -> np.ndarray:
    """Residual rows a metric covers: ``all`` rows 0..R-1, or ``layers`` 1..R-1 (layer l's output reaches row l + 1)."""
    return np.arange(1, n_rows) if metric_spec(name)["rows"] == "layers" else np.arange(n_rows)


def metric_values(a, name: str, *, answer=None, counterfactual=None) -> tuple[np.ndarray, np.ndarray]:
    """(rows [n], values [n, T] float64) of metric ``name``: the array the heatmap colours, at every
    position; per-target metrics pick ``answer`` (a target name or id)."""
    spec = metric_spec(name)
    lacking = (a.info.get("lacks") or {}).get(spec["needs"])
    if lacking:  # a backend without what the metric needs: say so, never NaN read as values
        raise ValueError(f"the metric {name!r} is unavailable on the {a.info.get('backend', 'session')} backend: {lacking}")
    if spec["needs"] == "targets" and answer is None:
        raise ValueError(f"the metric {name!r} needs targets=[answer, counterfactual]")
    if spec["needs"] == "two_targets" and (answer is None or counterfactual is None):
        raise ValueError(f"the metric {name!r} needs targets=[answer, counterfactual]")
    ctx = ArrayContext(answer=answer, counterfactual=counterfactual)
    v = np.asarray(ARRAY_COMPUTE[spec["array"]](a, slice(None), ctx), dtype=np.float64)
    if spec.get("per_target"):
        v = v[..., a.target_index(answer)]
    if ARRAY_SPECS[spec["array"]]["dtype"] == "index":
        v = np.where(v < 0, np.nan, v)  # a rank not read yet
    return metric_rows(name, a.n_rows), v


__all__ = ["ARRAY_COMPUTE", "ArrayContext", "METRIC_SPECS", "metric_available", "metric_lacking", "metric_rows", "metric_values", "sent"]
