"""Logit lens readout: top-k predictions and target ranks for many residual vectors at once.

Every residual-stream vector ``r`` (one per layer row x position) is read out exactly as the model
reads its last layer::

    z(r)      = ln_final(r) @ W_U + b_U          # ln_final recomputed for r's own mean and scale
    logits(r) = c * tanh(z(r) / c)               # only for soft-capped models (Gemma-2: c = 30)
    p(r)      = softmax(logits(r))

The [cells, vocab] logits are never held at once: rows are processed in chunks and only the
top-k, the log-normaliser and the targets' logits / ranks are kept, so memory grows with
cells x (k + targets), never with cells x vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

#: cells per chunk when reading out; chunk x d_vocab float32 logits live at once (~64 MB for GPT-2).
DEFAULT_CHUNK_ELEMENTS = 16_000_000


@dataclass
class LensReadout:
    """Numpy results for N flattened cells."""

    top_ids: np.ndarray  # [N, k] int64
    top_probs: np.ndarray  # [N, k] float32
    top_logits: np.ndarray  # [N, k] float32
    log_norm: np.ndarray  # [N] float32, logsumexp of the logits
    target_logits: np.ndarray  # [N, n] float32
    target_probs: np.ndarray  # [N, n] float32
    target_ranks: np.ndarray  # [N, n] int32, 0 = top (number of tokens with a strictly larger logit)


def lens_readout(
    normed: torch.Tensor,
    W_U: torch.Tensor,
    b_U: torch.Tensor | None,
    *,
    top_k: int,
    target_ids: Sequence[int] = (),
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    known_logits: torch.Tensor | None = None,
    softcap: float | None = None,
    progress: Callable[[float], None] | None = None,
) -> LensReadout:
    """Read out ``normed`` ([N, d_model], already passed through ``ln_final``) through the unembedding.

    ``W_U`` is [d_model, d_vocab], ``b_U`` [d_vocab] or None. ``known_logits`` ([M, d_vocab]) are the
    logits of the *last* M cells when they are already at hand (the model's own output for the final
    row): those cells skip the matrix product and go through the same top-k / rank / normaliser code.
    ``softcap`` c > 0 applies the model's own output soft-cap ``c * tanh(z / c)`` to the product
    (``known_logits`` are the model's output, already capped).
    """
    if normed.ndim != 2:
        raise ValueError(f"normed must be [cells, d_model], got shape {tuple(normed.shape)}")
    n_cells = normed.shape[0]
    d_vocab = W_U.shape[1]
    if not 1 <= top_k <= d_vocab:
        raise ValueError(f"top_k must be between 1 and the vocabulary size {d_vocab}, got {top_k}")
    W = W_U.to(torch.float32)
    b = None if b_U is None else b_U.to(torch.float32)
    tgt = torch.as_tensor(list(target_ids), dtype=torch.long, device=W.device)
    n_t = tgt.numel()
    chunk = max(1, int(chunk_elements // d_vocab))

    out_ids = torch.empty((n_cells, top_k), dtype=torch.long)
    out_logits = torch.empty((n_cells, top_k), dtype=torch.float32)
    out_lse = torch.empty((n_cells,), dtype=torch.float32)
    out_tl = torch.empty((n_cells, n_t), dtype=torch.float32)
    out_rank = torch.empty((n_cells, n_t), dtype=torch.int32)
    x = normed.to(torch.float32)
    n_known = 0 if known_logits is None else int(known_logits.shape[0])
    n_gemm = n_cells - n_known
    buf = torch.empty((min(chunk, n_cells), d_vocab), dtype=torch.float32, device=W.device)
    with torch.inference_mode():
        for start in range(0, n_cells, chunk):
            stop = min(n_cells, start + chunk)
            logits = buf[: stop - start]
            g = max(0, min(stop, n_gemm) - start)  # rows of this chunk that need the product
            if g and b is not None:
                torch.addmm(b, x[start : start + g], W, out=logits[:g])
            elif g:
                torch.mm(x[start : start + g], W, out=logits[:g])
            if g and softcap:
                logits[:g].div_(softcap).tanh_().mul_(softcap)
            if g < stop - start:
                logits[g:] = known_logits[start + g - n_gemm : stop - n_gemm]
            vals, idx = torch.topk(logits, top_k, dim=-1)
            out_ids[start:stop] = idx.cpu()
            out_logits[start:stop] = vals.cpu()
            if n_t:
                tl = logits.index_select(1, tgt)
                out_tl[start:stop] = tl.cpu()
                for j in range(n_t):
                    out_rank[start:stop, j] = _count_greater(logits, tl[:, j : j + 1])
            # log-sum-exp in place, shifted by the row maximum (the top-1 logit): logits are consumed
            top1 = vals[:, :1]
            out_lse[start:stop] = (logits.sub_(top1).exp_().sum(-1).log_() + top1[:, 0]).cpu()
            if progress is not None:
                progress(stop / n_cells)
    lse_np = out_lse.numpy()
    top_logits = out_logits.numpy()
    tl_np = out_tl.numpy()
    return LensReadout(
        top_ids=out_ids.numpy(),
        top_probs=np.exp(top_logits - lse_np[:, None]).astype(np.float32),
        top_logits=top_logits,
        log_norm=lse_np,
        target_logits=tl_np,
        target_probs=np.exp(tl_np - lse_np[:, None]).astype(np.float32),
        target_ranks=out_rank.numpy(),
    )


def _count_greater(logits: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many logits exceed the row's threshold (the rank of a target)."""
    if logits.device.type == "cpu":
        # numpy's compare-and-count is ~10x faster than torch's boolean sum on CPU (zero-copy view)
        counts = np.count_nonzero(logits.numpy() > threshold.numpy(), axis=-1)
        return torch.from_numpy(counts.astype(np.int32))
    return (logits > threshold).sum(-1).to(torch.int32).cpu()
