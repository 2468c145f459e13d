"""Residual-stream norms and the additivity check (seed 004).

For each layer l and position t: ``||resid||_2`` of every residual row, ``||attn_out_l||_2`` and
``||mlp_out_l||_2``. The decomposition is *checked* on the model's own cache, not assumed (some
architectures fold the residual into the attention output), in the form that holds for the block:

* sequential blocks: ``resid_mid = resid_pre + attn_out`` and ``resid_post = resid_mid + mlp_out``;
* parallel blocks (GPT-NeoX / Pythia): ``resid_post = resid_pre + attn_out + mlp_out``.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from resid_widgets import hooks

#: relative error below which the residual decomposition is reported as holding.
ADDITIVITY_TOLERANCE = 1e-4


def l2_norms(x: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(x.to(torch.float32), dim=-1).numpy(force=True)


def additivity_errors(cache: Mapping[str, torch.Tensor], n_layers: int, *, parallel: bool = False) -> dict[str, float]:
    """Largest relative error of the block's residual identities over all layers and positions.

    ``rel = max |lhs - rhs| / max |rhs|`` per layer; the worst layer is reported. Keys: ``attn`` and
    ``mlp`` for sequential blocks, ``block`` for parallel ones.
    """
    keys, diff, scale = additivity_parts(cache, n_layers, parallel=parallel)
    report = additivity_from_parts(keys, diff, scale)
    return {k: report[k] for k in keys}


def additivity_parts(
    cache: Mapping[str, torch.Tensor], n_layers: int, *, parallel: bool
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Per identity, layer and position: ``max_d |lhs - rhs|`` and ``max_d |rhs|`` ([K, L, T] each), so the
    check of a prompt whose prefix was computed earlier is assembled exactly from the two parts.
    Tensors are [T, d] (one prompt)."""
    if n_layers == 0:
        keys = ("block",) if parallel else ("attn", "mlp")
        return keys, np.zeros((len(keys), 0, 0), np.float32), np.zeros((len(keys), 0, 0), np.float32)

    def stack(name) -> torch.Tensor:
        return torch.stack([cache[name(l)].float() for l in range(n_layers)])

    pre, post, attn, mlp = stack(hooks.resid_pre), stack(hooks.resid_post), stack(hooks.attn_out), stack(hooks.mlp_out)
    if parallel:
        identities = (("block", pre + attn + mlp, post),)
    else:
        mid = stack(hooks.resid_mid)
        identities = (("attn", pre + attn, mid), ("mlp", mid + mlp, post))
    keys = tuple(k for k, _, _ in identities)
    diff = torch.stack([(lhs - rhs).abs().amax(-1) for _, lhs, rhs in identities]).numpy(force=True)
    scale = torch.stack([rhs.abs().amax(-1) for _, _, rhs in identities]).numpy(force=True)
    return keys, diff, scale


def additivity_from_parts(keys: tuple[str, ...], diff: np.ndarray, scale: np.ndarray) -> dict:
    """The report of ``additivity_report`` from per-position parts ([K, L, T]). No identities (a backend
    without the sublayer outputs): ``form`` "unavailable", ``holds`` None (not checked, neither true nor false)."""
    if not keys:
        return {"form": "unavailable", "tolerance": ADDITIVITY_TOLERANCE, "holds": None}
    if diff.size == 0:
        errors = {k: 0.0 for k in keys}
    else:  # per layer: the largest error over positions over the largest |rhs| over positions
        flat = lambda a: a.reshape(a.shape[0], a.shape[1], -1).max(-1)  # noqa: E731  [K, L]
        per_layer = flat(diff) / np.maximum(flat(scale), 1e-12)
        errors = {k: float(per_layer[i].max()) for i, k in enumerate(keys)}
    return {
        **errors,
        "form": "parallel" if keys == ("block",) else "sequential",
        "tolerance": ADDITIVITY_TOLERANCE,
        "holds": bool(max(errors.values()) <= ADDITIVITY_TOLERANCE),
    }


def additivity_report(cache: Mapping[str, torch.Tensor], n_layers: int, *, parallel: bool) -> dict:
    """``additivity_errors`` plus the block form, the tolerance and whether it holds."""
    return additivity_from_parts(*additivity_parts(cache, n_layers, parallel=parallel))
