"""Lens readout: top-k predictions, target ranks, entropy and KL to the model's output for many
residual vectors at once.

Every residual-stream vector ``r`` (one per layer row x position) is read out exactly as the model
reads its last layer, after the chosen lens has transported it (the logit lens leaves it as is)::

    z(r)      = ln_final(r) @ W_U + b_U          # ln_final recomputed for r's own mean and scale
    logits(r) = c * tanh(z(r) / c)               # the model's output transform: Gemma-2's soft-cap (c = 30),
                                                 # or another architecture's logit scaling
    p(r)      = softmax(logits(r))

Per cell it keeps the top-k, the log-normaliser ``log sum exp logits``, the targets' logits and
ranks, the entropy ``H(p) = lse - sum p * logits`` (nats), and, given the model's own output
distribution q at the cell's position, ``KL(q || p) = sum q (log q - log p)`` (nats) and the rank of
q's top-1 token under p. The [cells, vocab] logits are never held at once: cells are read in
chunks, and every statistic is taken while the chunk is in memory, so memory grows with
cells x (k + targets), never with cells x vocab.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

#: logits per chunk when reading out; chunk x d_vocab float32 logits live at once (~64 MB).
DEFAULT_CHUNK_ELEMENTS = 16_000_000

#: the per-cell arrays a readout produces, with their trailing shape ("k" = top-k, "n" = targets).
READOUT_FIELDS = {
    "top_ids": "k",
    "top_probs": "k",
    "top_logits": "k",
    "log_norm": "",
    "target_logits": "n",
    "target_probs": "n",
    "target_ranks": "n",
    "entropy": "",
    "kl_to_output": "",
    "final_top1_rank": "",
}


def softcap(cap: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """Gemma-2's output soft-cap ``c * tanh(z / c)``, in place."""
    return lambda z: z.div_(cap).tanh_().mul_(cap)


@dataclass
class FinalReadout:
    """The model's own final readout: final norm, unembedding (+ bias), then the architecture's output
    transform when it has one (Gemma-2's soft-cap, Cohere's / Granite's logit scaling)."""

    ln_final: Callable[[torch.Tensor], torch.Tensor]
    W_U: torch.Tensor  # [d_model, d_vocab]
    b_U: torch.Tensor | None  # [d_vocab]
    output_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def d_vocab(self) -> int:
        return int(self.W_U.shape[1])

    def normalise(self, resid: torch.Tensor) -> torch.Tensor:
        """``ln_final`` of each vector on its own (float32 out)."""
        with torch.inference_mode():
            return self.ln_final(resid.to(self.W_U.dtype)).float()

    def logits(self, normed: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, d_vocab]`` logits of already-normalised vectors (soft-cap applied)."""
        W = self.W_U.float()
        x = normed.to(torch.float32)
        if out is None:
            out = torch.empty((x.shape[0], W.shape[1]), dtype=torch.float32, device=W.device)
        if self.b_U is not None:
            torch.addmm(self.b_U.float(), x, W, out=out)
        else:
            torch.mm(x, W, out=out)
        if self.output_transform is not None:
            z = self.output_transform(out)
            if z is not out:
                out.copy_(z)
        return out


@dataclass
class Reference:
    """The model's own output distribution at P positions, for KL and the final top-1's rank."""

    logp: torch.Tensor  # [P, d_vocab] log-probabilities
    neg_entropy: torch.Tensor  # [P] sum q log q
    top1: torch.Tensor  # [P] the model's top-1 token id

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "Reference":
        logp = torch.log_softmax(logits.float(), dim=-1)
        return cls(logp=logp, neg_entropy=(logp.exp() * logp).sum(-1), top1=logp.argmax(-1))

    def select(self, positions: slice) -> "Reference":
        return Reference(self.logp[positions], self.neg_entropy[positions], self.top1[positions])


def read_block(
    normed: torch.Tensor,
    readout: FinalReadout,
    *,
    top_k: int,
    target_ids: Sequence[int] = (),
    reference: Reference | None = None,
    known_logits: torch.Tensor | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    progress: Callable[[float], None] | None = None,
) -> dict[str, np.ndarray]:
    """Read out a block of cells ``normed`` [P, rows, d_model] (positions x rows, already through
    ``ln_final``); returns numpy arrays [P, rows, ...] named as in ``READOUT_FIELDS``.

    ``reference`` is the model's output at the same P positions (for KL and the final top-1's
    rank); without it those fields are NaN / -1. ``known_logits`` [P, rows, d_vocab] replaces the
    product when the logits are already at hand (the model's own output for the final row).
    """
    if normed.ndim != 3:
        raise ValueError(f"normed must be [positions, rows, d_model], got shape {tuple(normed.shape)}")
    P, rows = int(normed.shape[0]), int(normed.shape[1])
    V = readout.d_vocab
    if not 1 <= top_k <= V:
        raise ValueError(f"top_k must be between 1 and the vocabulary size {V}, got {top_k}")
    device = readout.W_U.device
    tgt = torch.as_tensor(list(target_ids), dtype=torch.long, device=device)
    n_t = int(tgt.numel())
    out = {
        "top_ids": np.empty((P, rows, top_k), np.int64),
        "top_logits": np.empty((P, rows, top_k), np.float32),
        "log_norm": np.empty((P, rows), np.float32),
        "target_logits": np.empty((P, rows, n_t), np.float32),
        "target_ranks": np.empty((P, rows, n_t), np.int32),
        "entropy": np.empty((P, rows), np.float32),
        "kl_to_output": np.full((P, rows), np.nan, np.float32),
        "final_top1_rank": np.full((P, rows), -1, np.int32),
    }
    step = max(1, int(chunk_elements // max(1, rows * V)))  # positions per chunk
    buf = torch.empty((min(step, P) * rows, V), dtype=torch.float32, device=device)
    work = torch.empty_like(buf)
    with torch.inference_mode():
        for p0 in range(0, P, step):
            p1 = min(P, p0 + step)
            c = (p1 - p0) * rows
            z = buf[:c]
            if known_logits is not None:
                z.copy_(known_logits[p0:p1].reshape(c, V))
            else:
                readout.logits(normed[p0:p1].reshape(c, -1), out=z)
            vals, idx = torch.topk(z, top_k, dim=-1)
            top1 = vals[:, :1]
            # log-sum-exp and entropy from e = exp(z - max): lse = max + log S, H = lse - sum(e z) / S
            e = torch.sub(z, top1, out=work[:c]).exp_()
            S = e.sum(-1)
            ez = torch.linalg.vecdot(e, z)
            lse = S.log() + top1[:, 0]
            entropy = lse - ez / S
            sl = (slice(p0, p1), slice(None))
            out["top_ids"][sl] = idx.view(p1 - p0, rows, top_k).numpy(force=True)
            out["top_logits"][sl] = vals.view(p1 - p0, rows, top_k).numpy(force=True)
            out["log_norm"][sl] = lse.view(p1 - p0, rows).numpy(force=True)
            out["entropy"][sl] = entropy.view(p1 - p0, rows).numpy(force=True)
            if n_t:
                tl = z.index_select(1, tgt)
                out["target_logits"][sl] = tl.view(p1 - p0, rows, n_t).numpy(force=True)
                for j in range(n_t):
                    out["target_ranks"][p0:p1, :, j] = _count_greater(z, tl[:, j : j + 1]).view(p1 - p0, rows).numpy()
            if reference is not None:
                ref = reference.select(slice(p0, p1))
                # sum_v q_v z_v for every cell: one batched pass over the chunk, positions as the batch
                qz = torch.bmm(z.view(p1 - p0, rows, V), ref.logp.exp().unsqueeze(-1)).squeeze(-1)  # [P', rows]
                kl = ref.neg_entropy[:, None] - qz + lse.view(p1 - p0, rows)
                out["kl_to_output"][sl] = kl.clamp_min_(0.0).numpy(force=True)
                thr = z.view(p1 - p0, rows, V).gather(2, ref.top1.view(-1, 1, 1).expand(-1, rows, 1)).reshape(c, 1)
                out["final_top1_rank"][sl] = _count_greater(z, thr).view(p1 - p0, rows).numpy()
            if progress is not None:
                progress(p1 / P)
    out["top_probs"] = np.exp(out["top_logits"] - out["log_norm"][..., None]).astype(np.float32)
    out["target_probs"] = np.exp(out["target_logits"] - out["log_norm"][..., None]).astype(np.float32)
    return out


def _count_greater(logits: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Per row, how many logits exceed the row's threshold (the rank of a token; 0 = top)."""
    if logits.device.type == "cpu":
        # numpy's compare-and-count is ~10x faster than torch's boolean sum on CPU (zero-copy view)
        counts = np.count_nonzero(logits.numpy() > threshold.numpy(), axis=-1)
        return torch.from_numpy(counts.astype(np.int32))
    return (logits > threshold).sum(-1).to(torch.int32).cpu()
