"""The ``Analysis`` of one prompt from what an nnsight trace sent back (``NNsightModel.trace``): the same
fields as ``resid_widgets.analyses.pipeline.run_stages`` fills from local activations, without the residual
stream (``Analysis._resid`` is None: task vectors need a local or captured backend)."""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

from resid_widgets import hooks
from resid_widgets.analyses.emergence import emergence_rows
from resid_widgets.analyses.norms import additivity_from_parts
from resid_widgets.analyses.pipeline import Cancelled, Update, own_distribution
from resid_widgets.analyses.projection import pct_at_k
from resid_widgets.analyses.result import Analysis


#: the names of Analysis's fields
_ANALYSIS_FIELDS = frozenset(f.name for f in dataclasses.fields(Analysis))


def projection_ks(subspace: Any, tau: float) -> list[int]:
    """The k of the requested tau and of every tau on the view's slider grid: the only projection
    fractions that leave the trace."""
    from resid_widgets.payload.protocol import TAU_GRID

    return sorted({subspace.k_for_tau(t) for t in TAU_GRID} | {subspace.k_for_tau(tau)})


def step_curve(frac: np.ndarray, ks: list[int], m: int) -> np.ndarray:
    """[..., m] cumulative-fraction curves from their values at ``ks`` (there to float16 precision, ~1e-3,
    finer than the view's 8-bit grid; in between, the value at the largest k below)."""
    ks_arr = np.asarray(ks)
    idx = np.searchsorted(ks_arr, np.arange(1, m + 1), side="right") - 1  # the shipped k <= each k
    padded = np.concatenate([np.zeros(frac.shape[:-1] + (1,), np.float32), frac], axis=-1)
    return padded[..., idx + 1]


def analysis_from_trace(model: Any, req: Any, ctx: Any) -> Iterator[Update]:
    if ctx.cancelled():
        raise Cancelled("superseded by a newer request")
    sub = ctx.subspace
    ks = projection_ks(sub, req.tau)
    k = sub.k_for_tau(req.tau)
    shipped = model.trace(req.ids, top_k=req.top_k, target_ids=req.target_ids, U=sub.U[:, : max(ks)], ks=ks, k=k, chunk_elements=ctx.chunk_elements)
    if ctx.cancelled():
        raise Cancelled("superseded by a newer request")
    R, T = shipped["log_norm"].shape
    m = int(sub.U.shape[1])
    proj_cum = step_curve(shipped["proj_grid"].astype(np.float32), ks, m)
    proj_cum[..., k - 1] = shipped["proj_exact"]
    top_ids = shipped["top_ids"].astype(np.int64)
    lse = shipped["log_norm"]
    # arrays the trace ships under an Analysis field's name go in as they are
    direct = {name: np.array(shipped[name]) for name in _ANALYSIS_FIELDS & shipped.keys() - {"top_ids", "log_norm"}}
    own_distribution(direct, -1)
    strings = ctx.strings(np.concatenate([req.ids, top_ids.reshape(-1), req.target_ids]).astype(np.int64))
    info = dict(ctx.info)
    info["lens_vs_model_max_abs"] = float(shipped["lens_vs_model"][0])
    info["lens_formula_matches_model"] = info["lens_vs_model_max_abs"] <= 1e-3 * max(1.0, float(shipped["lens_vs_model"][1]))
    info["bytes_from_trace"] = int(model.last_bytes)
    final_em, target_em = emergence_rows(top_ids, top_ids[-1, :, 0], req.target_ids)
    keys = ("block",) if model.cfg.parallel_attn_mlp else ("attn", "mlp")
    analysis = Analysis(
        prompt=req.prompt,
        model_name=ctx.model_name,
        hook_names=hooks.residual_rows(R - 1),
        tokens=[strings[int(i)] for i in req.ids],
        token_ids=np.asarray(req.ids, np.int64),
        is_bos=np.array([req.added_bos and i == 0 for i in range(T)]),
        top_ids=top_ids,
        top_probs=np.exp(shipped["top_logits"] - lse[..., None]).astype(np.float32),
        log_norm=lse,
        targets=list(req.target_names),
        target_ids=list(req.target_ids),
        target_probs=np.exp(shipped["target_logits"] - lse[..., None]).astype(np.float32),
        emergence_row=final_em,
        target_emergence=target_em,
        tau=req.tau,
        k=k,
        singular_values=sub.singular_values,
        cumulative_energy=sub.cumulative_energy,
        projection_pct=pct_at_k(proj_cum, k),
        projection_final_pct=pct_at_k(proj_cum[-1], k),  # ln_final's output is the last row rescaled
        additivity=additivity_from_parts(keys, shipped["add_diff"][-len(keys):], shipped["add_scale"][-len(keys):]),
        strings=strings,
        lens=req.lens_kind,
        info=info,
        _proj_cum=proj_cum,
        _proj_final_cum=proj_cum[-1],
        _resid=None,
        **direct,
    )
    yield Update("begin", analysis, (0, T), fraction=0.9)
    yield Update("done", analysis, (0, T), fraction=1.0)


__all__ = ["analysis_from_trace", "projection_ks", "step_curve"]
