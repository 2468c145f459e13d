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
    return torch.linalg.vector_norm(x.to(torch.float32), dim=-1).numpy(force=True)


def additivity_errors(cache: Mapping[str, torch.Tensor], n_layers: int) -> dict[str, float]:
    """Largest relative error of the two residual identities over all layers and positions.

    ``rel = max |lhs - rhs| / max |rhs|`` per layer; the worst layer is reported.
    """
    if n_layers == 0:
        return {"attn": 0.0, "mlp": 0.0}

    def stack(kind: str) -> torch.Tensor:
        return torch.stack([cache[f"blocks.{l}.hook_{kind}"].float() for l in range(n_layers)])

    pre, mid, post = stack("resid_pre"), stack("resid_mid"), stack("resid_post")
    worst = {}
    for key, lhs, rhs in (("attn", pre + stack("attn_out"), mid), ("mlp", mid + stack("mlp_out"), post)):
        per_layer = (lhs - rhs).abs().flatten(1).amax(1) / rhs.abs().flatten(1).amax(1).clamp_min(1e-12)
        worst[key] = float(per_layer.max())
    return worst


#: relative error below which the residual decomposition is reported as holding.
ADDITIVITY_TOLERANCE = 1e-4
