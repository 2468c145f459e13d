"""How well a lens reads the model's output: KL(model output || lens) per row and position, in nats."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from resid_widgets.lenses.base import Lens, final_logits, model_of


def kl_to_output(session_or_model: Any, resid: torch.Tensor, lens: Lens, *, chunk: int = 1024) -> np.ndarray:
    """``KL(p_model || p_lens)`` [R, N] for residual rows ``resid`` [R, N, d] (N tokens), where p_model is the
    final readout of the last row (the model's own output distribution)."""
    model = model_of(session_or_model)
    R, N, _ = resid.shape
    if R != lens.n_rows:
        raise ValueError(f"resid has {R} rows, the lens {lens.n_rows}")
    out = np.zeros((R, N), dtype=np.float64)
    device = model.W_U.device
    with torch.inference_mode():
        for s in range(0, N, chunk):
            x = resid[:, s : s + chunk].to(device)
            logp = torch.log_softmax(final_logits(model, x[-1]), dim=-1)
            p = logp.exp()
            for r in range(R):
                logq = torch.log_softmax(final_logits(model, lens.transform_rows(x[r : r + 1], [r])[0]), dim=-1)
                out[r, s : s + chunk] = (p * (logp - logq)).sum(-1).clamp_min(0).double().cpu().numpy()
    return out


def mean_kl_table(session_or_model: Any, resid: torch.Tensor, lenses: Sequence[Lens], *, skip: np.ndarray | None = None):
    """``{kind: mean KL per row [R]}`` over the tokens of ``resid`` [R, N, d] (``skip`` [N] bool drops tokens)."""
    table = {}
    for lens in lenses:
        kl = kl_to_output(session_or_model, resid, lens)
        if skip is not None:
            kl = kl[:, ~np.asarray(skip, dtype=bool)]
        table[lens.kind] = kl.mean(axis=1)
    return table
