"""Residual-stream norms and the additivity check (seed 004).

For each layer l and position t: ``||resid||_2`` of every residual row, ``||attn_out_l||_2`` and
``||mlp_out_l||_2``. The decomposition ``resid_mid = resid_pre + attn_out`` and
``resid_post = resid_mid + mlp_out`` is *checked* on the model's own cache, not assumed (some
architectures fold the residual into the attention output).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch


def l2_norms(x: torch.Tensor) -> np.ndarray:
    return torch.linalg.vector_norm(x.to(torch.float32), dim=-1).numpy()


def additivity_errors(cache: Mapping[str, torch.Tensor], n_layers: int) -> dict[str, float]:
    """Largest relative error of the two residual identities over all layers and positions.

    ``rel = max |lhs - rhs| / max |rhs|`` per layer; the worst layer is reported.
    """
    worst = {"attn": 0.0, "mlp": 0.0}
    for layer in range(n_layers):
        pre = cache[f"blocks.{layer}.hook_resid_pre"].float()
        mid = cache[f"blocks.{layer}.hook_resid_mid"].float()
        post = cache[f"blocks.{layer}.hook_resid_post"].float()
        attn = cache[f"blocks.{layer}.hook_attn_out"].float()
        mlp = cache[f"blocks.{layer}.hook_mlp_out"].float()
        for key, lhs, rhs in (("attn", pre + attn, mid), ("mlp", mid + mlp, post)):
            scale = rhs.abs().max().clamp_min(1e-12)
            worst[key] = max(worst[key], float((lhs - rhs).abs().max() / scale))
    return worst


#: relative error below which the residual decomposition is reported as holding.
ADDITIVITY_TOLERANCE = 1e-4
