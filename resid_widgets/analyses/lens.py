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
chunks (one matrix product each), and every statistic is taken a few positions at a time while
those logits are in the processor's cache, so memory grows with cells x (k + targets), never with
cells x vocab, and the statistics cost ~0.1x the product instead of ~0.4x (single thread, GPT-2 small).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

#: logits per chunk when reading out; chunk x d_vocab float32 logits live at once (~64 MB).
DEFAULT_CHUNK_ELEMENTS = 16_000_000

#: unembedding entries converted to float32 at once when W_U is half precision (bf16 / fp16): 16 MB
VOCAB_CHUNK_ELEMENTS = 4_000_000

#: logits per pass of the per-cell statistics (top-k, softmax, ranks, KL) on a CPU: a few MB, so the
#: dozen passes over them hit the processor's cache instead of memory (at least one position's rows).
#: On an accelerator each pass is a dozen kernel launches and a few host copies whatever its size, so
#: there the statistics take the whole chunk at once: on an H200 the GPT-2-small full view at 1,024
#: tokens spent 1.0 of its 1.3 s in 1,079 cache-sized passes (bench/results/gpu-gpt2small.json).
SUB_BLOCK_ELEMENTS = 1_000_000

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
    "kl": "",
    "final_rank": "",
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
        """``[N, d_vocab]`` float32 logits of already-normalised vectors (soft-cap applied). A half-precision
        W_U (bf16 / fp16) is read a block of ``VOCAB_CHUNK_ELEMENTS`` at a time in float32 on its own
        device, so no float32 copy of the whole unembedding is ever made."""
        x = normed.to(torch.float32)
        V = self.d_vocab
        if out is None:
            out = torch.empty((x.shape[0], V), dtype=torch.float32, device=self.W_U.device)
        if self.W_U.dtype == torch.float32:
            if self.b_U is not None:
                torch.addmm(self.b_U.float(), x, self.W_U, out=out)
            else:
                torch.mm(x, self.W_U, out=out)
        else:
            step = max(1, VOCAB_CHUNK_ELEMENTS // max(1, int(self.W_U.shape[0])))
            for v0 in range(0, V, step):
                W = self.W_U[:, v0 : v0 + step].float()
                if self.b_U is not None:
                    out[:, v0 : v0 + step] = torch.addmm(self.b_U[v0 : v0 + step].float(), x, W)
                else:
                    out[:, v0 : v0 + step] = x @ W
        if self.output_transform is not None:
            z = self.output_transform(out)
            if z is not out:
                out.copy_(z)
        return out


@dataclass
class Reference:
    """The model's own output distribution q at P positions, for KL and the final top-1's rank."""

    logits: torch.Tensor  # [P, d_vocab] float32
    lse: torch.Tensor  # [P] log sum exp logits (log q = logits - lse)
    neg_entropy: torch.Tensor  # [P] sum q log q
    top1: torch.Tensor  # [P] the model's top-1 token id

    @classmethod
    def from_logits(cls, logits: torch.Tensor) -> "Reference":
        z = logits.float()
        logp = torch.log_softmax(z, dim=-1)
        top1 = logp.argmax(-1)
        lse = (z.gather(1, top1[:, None]) - logp.gather(1, top1[:, None]))[:, 0]
        return cls(logits=z, lse=lse, neg_entropy=(logp.exp() * logp).sum(-1), top1=top1)

    @classmethod
    def from_readout(cls, logits: torch.Tensor, readout: dict[str, np.ndarray]) -> "Reference":
        """From ``read_block``'s statistics of the same logits ([P, 1] cells): nothing computed twice."""
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, 0])).to(logits.device)  # noqa: E731
        return cls(
            logits=logits.float(),
            lse=as_tensor(readout["log_norm"]),
            neg_entropy=-as_tensor(readout["entropy"]),
            top1=as_tensor(readout["top_ids"][..., 0]),
        )

    def probs(self) -> torch.Tensor:
        """q [P, d_vocab]."""
        return torch.exp(self.logits - self.lse[:, None])

    def select(self, positions: slice) -> "Reference":
        return Reference(self.logits[positions], self.lse[positions], self.neg_entropy[positions], self.top1[positions])


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
    workspace: "Workspace | None" = None,
    sub_block_elements: int | None = None,
) -> dict[str, np.ndarray]:
    """Read out a block of cells ``normed`` [P, rows, d_model] (positions x rows, already through
    ``ln_final``); returns numpy arrays [P, rows, ...] named as in ``READOUT_FIELDS``.

    ``reference`` is the model's output at the same P positions (for KL and the final top-1's
    rank); without it those fields are NaN / -1. ``known_logits`` [P, rows, d_vocab] replaces the
    product when the logits are already at hand (the model's own output for the final row).
    ``workspace`` keeps the [chunk, d_vocab] buffers between calls (one per thread).
    ``sub_block_elements``: logits per pass of the statistics (default: ``SUB_BLOCK_ELEMENTS`` on a CPU,
    the whole chunk on an accelerator); ids and ranks do not depend on it, floats only to float32 rounding.
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
        "kl": np.full((P, rows), np.nan, np.float32),
        "final_rank": np.full((P, rows), -1, np.int32),
    }
    ws = workspace if workspace is not None else Workspace()
    step = max(1, int(chunk_elements // max(1, rows * V)))  # positions per product
    if sub_block_elements is None:
        sub_block_elements = SUB_BLOCK_ELEMENTS if device.type == "cpu" else chunk_elements
    sub = max(1, int(sub_block_elements // max(1, rows * V)))  # positions per pass of the statistics
    with torch.inference_mode():
        for p0 in range(0, P, step):
            p1 = min(P, p0 + step)
            if known_logits is not None:
                z_all = known_logits[p0:p1].reshape((p1 - p0) * rows, V).float()  # read only: no copy when float32
            else:
                z_all = readout.logits(normed[p0:p1].reshape((p1 - p0) * rows, -1), out=ws.take("logits", ((p1 - p0) * rows, V), device))
            # the statistics a few positions at a time, while those logits are in the processor's cache
            for s0 in range(p0, p1, sub):
                s1 = min(p1, s0 + sub)
                z = z_all[(s0 - p0) * rows : (s1 - p0) * rows]
                _statistics(z, out, (slice(s0, s1), slice(None)), rows, top_k, tgt, reference.select(slice(s0, s1)) if reference is not None else None, ws)
            if progress is not None:
                progress(p1 / P)
    out["top_probs"] = np.exp(out["top_logits"] - out["log_norm"][..., None]).astype(np.float32)
    out["target_probs"] = np.exp(out["target_logits"] - out["log_norm"][..., None]).astype(np.float32)
    return out


def _statistics(z: torch.Tensor, out: dict[str, np.ndarray], sl, rows: int, top_k: int, tgt: torch.Tensor, ref: "Reference | None", ws: "Workspace") -> None:
    """Every statistic of the cells ``z`` [n * rows, V] (n positions), written to ``out[...][sl]``."""
    c, V = z.shape
    n = c // rows
    device = z.device
    vals, idx = _topk(z, top_k)
    # y = z - max <= 0 and one fused softmax pass p = exp(y) / S: the top-1's probability is
    # exp(0) / S, so log S = -log p_top1, lse = max + log S, and the entropy H = log S - sum p y
    # is a sum of non-negative terms (no cancellation for peaked rows)
    y = torch.sub(z, vals[:, :1], out=ws.take("shifted", (c, V), device))
    p = _softmax(y, out=ws.take("probs", (c, V), device))
    log_s = p.gather(1, idx[:, :1])[:, 0].log_().neg_()
    lse = vals[:, 0] + log_s
    entropy = log_s - p.mul_(y).sum(-1)
    out["top_ids"][sl] = idx.view(n, rows, top_k).numpy(force=True)
    out["top_logits"][sl] = vals.view(n, rows, top_k).numpy(force=True)
    out["log_norm"][sl] = lse.view(n, rows).numpy(force=True)
    out["entropy"][sl] = entropy.view(n, rows).numpy(force=True)
    # rank thresholds: the targets' logits, then the model's own top-1's logit (one counting pass)
    thresholds = []
    n_t = int(tgt.numel())
    if n_t:
        tl = z.index_select(1, tgt)
        out["target_logits"][sl] = tl.view(n, rows, n_t).numpy(force=True)
        thresholds.append(tl)
    if ref is not None:
        # sum_v q_v z_v for every cell: one batched pass, positions as the batch
        qz = torch.bmm(z.view(n, rows, V), ref.probs().unsqueeze(-1)).squeeze(-1)  # [n, rows]
        kl = ref.neg_entropy[:, None] - qz + lse.view(n, rows)
        out["kl"][sl] = kl.clamp_min_(0.0).numpy(force=True)
        thresholds.append(z.view(n, rows, V).gather(2, ref.top1.view(-1, 1, 1).expand(-1, rows, 1)).reshape(c, 1))
    if thresholds:
        counts = _count_greater(z, torch.cat(thresholds, dim=1), ws).view(n, rows, -1).numpy()
        if n_t:
            out["target_ranks"][sl] = counts[..., :n_t]
        if ref is not None:
            out["final_rank"][sl] = counts[..., -1]


class Workspace:
    """Reusable scratch tensors for ``read_block``: a fresh [chunk, d_vocab] buffer per call costs
    page faults on every chunk. Not thread-safe: one per running analysis."""

    def __init__(self):
        self._buffers: dict[str, torch.Tensor | np.ndarray] = {}

    def take(self, name: str, shape: tuple[int, ...], device: torch.device, dtype=torch.float32) -> torch.Tensor:
        """A [shape] view of the buffer ``name``, grown when too small."""
        size = int(np.prod(shape))
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size or buf.device != device or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(size, dtype=dtype, device=device)
        return buf[:size].view(shape)

    def flags(self, shape: tuple[int, ...]) -> np.ndarray:
        """A boolean numpy buffer of ``shape`` (the rank counts' comparisons on CPU)."""
        size = int(np.prod(shape))
        buf = self._buffers.get("flags")
        if buf is None or buf.size < size:
            buf = self._buffers["flags"] = np.empty(size, np.bool_)
        return buf[:size].reshape(shape)


#: top-k in two steps (block maxima first) when the vocabulary is this many times larger than k * block
_TOPK_BLOCK = 256


def _topk(z: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(z, k, dim=-1)`` (values sorted, descending), ~4x faster for a large vocabulary:
    the k blocks of ``_TOPK_BLOCK`` logits with the largest maxima hold k values at least as large
    as every logit outside them (each chosen block's maximum is), so the top-k of those blocks (and
    the few logits after the last whole block) is the top-k of the row."""
    c, V = z.shape
    bs = _TOPK_BLOCK
    n_blocks = V // bs
    if k > n_blocks or 8 * k * bs > V:
        return torch.topk(z, k, dim=-1)
    main = z[:, : n_blocks * bs].unflatten(1, (n_blocks, bs))
    _, blocks = main.amax(-1).topk(k, dim=-1)  # [c, k]
    cand = (blocks[..., None] * bs + torch.arange(bs, device=z.device)).flatten(1)  # [c, k * bs]
    if V > n_blocks * bs:
        cand = torch.cat([cand, torch.arange(n_blocks * bs, V, device=z.device).expand(c, -1)], dim=1)
    vals, j = z.gather(1, cand).topk(k, dim=-1)
    return vals, cand.gather(1, j)


def _softmax(z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``softmax(z, -1)`` written into ``out`` (no fresh [chunk, vocab] allocation per chunk)."""
    try:
        return torch.ops.aten._softmax.out(z, -1, False, out=out)
    except (AttributeError, NotImplementedError):  # pragma: no cover - a torch without the out= variant
        return out.copy_(torch.softmax(z, -1))


def _count_greater(logits: torch.Tensor, thresholds: torch.Tensor, ws: "Workspace | None" = None) -> torch.Tensor:
    """How many logits of each row exceed each of the row's thresholds: logits [c, V], thresholds
    [c, m] -> [c, m] int32 (the rank of a token; 0 = top)."""
    if logits.device.type == "cpu":
        # numpy's compare-and-count is ~10x faster than torch's boolean sum on CPU (zero-copy views);
        # the m comparisons of a row run back to back (the row stays in cache) and the flags are
        # summed as bytes (~2x faster than np.count_nonzero along an axis)
        z, t = logits.numpy(), thresholds.numpy()
        c, m = t.shape
        flags = None if ws is None else ws.flags((c, m, z.shape[1]))
        gt = np.greater(z[:, None, :], t[:, :, None], out=flags)
        return torch.from_numpy(gt.view(np.uint8).sum(axis=-1, dtype=np.int32))
    return (logits[:, None, :] > thresholds[:, :, None]).sum(-1).to(torch.int32).cpu()
