"""The tuned lens (Belrose et al. 2023): a learned affine translator per residual row.

Row r is read as the model's own final readout of ``h + A_r h + b_r``; ``A_r`` and ``b_r`` start at
zero (the logit lens) and are trained to minimise ``KL(model output || lens output)`` averaged over
tokens, the paper's objective. The last row is the identity.

The ``tuned-lens`` package (0.2.0) installs beside torch 2.13 / transformers 5, and its lens modules
run, but its trainer does not: it imports ``torchdata.dataloader2`` (gone since torchdata 0.10) and,
with torchdata 0.9, passes ``load_in_8bit`` to ``from_pretrained``, which transformers 5 rejects.
So the translators are trained here, on the session's own residual rows, by a small loop: a fixed
seed, Adam, minibatches of tokens drawn from a fixed set of residual rows computed once.

LayerNorm models: the translators are trained on the compatibility-mode rows (each row minus its
mean) and the lens centres its input (``centre_input``), so raw (uncentred) rows read the same way;
``b_r``'s mean is removed by the final LayerNorm either way.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch

from resid_widgets.lenses.base import (
    Lens,
    Progress,
    _model_name,
    final_logits,
    frozen_parameters,
    is_layernorm,
    model_of,
    register,
    report,
    residual_rows,
    tokenize,
)


@register
class TunedLens(Lens):
    """``v_r = h + A_r h + b_r`` at row r; stored as ``M_r = I + A_r`` and ``c_r = b_r``."""

    kind = "tuned"

    @classmethod
    def from_translators(cls, A: torch.Tensor, b: torch.Tensor, *, centre_input: bool = False,
                         info: dict | None = None) -> "TunedLens":
        """``A`` [L, d, d] and ``b`` [L, d] for rows 0..L-1 (row L is the identity)."""
        L, d = int(A.shape[0]), int(A.shape[-1])
        eye = torch.eye(d)
        return cls(L + 1, d, matrices={r: eye + A[r].detach().float().cpu() for r in range(L)},
                   offsets={r: b[r].detach().float().cpu() for r in range(L)}, centre_input=centre_input, info=info)


def collect_rows(
    session: Any, texts: Sequence[str | Sequence[int]], *, max_seq_len: int = 128, batch_size: int = 16,
    progress: Progress | None = None,
) -> torch.Tensor:
    """The residual rows of every token of ``texts``: [R, N, d] float32 on the CPU (one forward pass per batch;
    texts of different lengths are right-padded and the padding dropped)."""
    model = model_of(session)
    seqs = [tokenize(model, t, max_seq_len) for t in texts]
    seqs = [s for s in seqs if len(s)]
    if not seqs:
        raise ValueError("no tokens in the texts")
    out = []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        T = max(len(s) for s in chunk)
        batch = torch.zeros(len(chunk), T, dtype=torch.long)
        for j, s in enumerate(chunk):
            batch[j, : len(s)] = s
        rows = residual_rows(model, batch).cpu()  # [R, B, T, d]
        out += [rows[:, j, : len(s)] for j, s in enumerate(chunk)]
        report(progress, (i + len(chunk)) / len(seqs), "residual rows")
    return torch.cat(out, dim=1)


def train_tuned_lens(
    session: Any,
    texts: Sequence[str | Sequence[int]],
    *,
    steps: int,
    seed: int,
    progress: Progress | None = None,
    lr: float = 1e-3,
    batch_tokens: int = 1024,
    max_seq_len: int = 128,
    rows_cache: torch.Tensor | None = None,
    corpus: str | None = None,
) -> TunedLens:
    """Train per-row translators on ``texts`` with ``KL(model output || lens)`` (Belrose et al. 2023).

    Deterministic for a given seed, texts and settings (on the same machine): Adam (``lr``) for
    ``steps`` steps, each on ``batch_tokens`` tokens drawn at random (``torch.Generator(seed)``) from
    all tokens of ``texts``. ``rows_cache`` (from :func:`collect_rows`) skips the forward passes.
    ``info["loss"]`` holds the mean KL over rows per step (nats), first and last.
    """
    model = model_of(session)
    L, d = int(model.cfg.n_layers), int(model.W_U.shape[0])
    if steps < 1 or batch_tokens < 1 or lr <= 0:
        raise ValueError("steps and batch_tokens must be >= 1 and lr > 0")
    if L < 1:
        raise ValueError("the model has no layers to tune")
    if rows_cache is None and (texts is None or isinstance(texts, str) or not len(texts)):
        raise ValueError("train_tuned_lens needs a non-empty list of texts (or rows_cache from collect_rows)")
    t0 = time.perf_counter()
    rows = rows_cache if rows_cache is not None else collect_rows(
        session, texts, max_seq_len=max_seq_len, progress=None if progress is None else (lambda f, s: report(progress, 0.1 * f, s)))
    if rows.ndim != 3 or rows.shape[0] != L + 1 or rows.shape[-1] != d:
        raise ValueError(f"rows must be [{L + 1}, tokens, {d}], got {tuple(rows.shape)}")
    device = model.W_U.device
    n_tok = rows.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    A = torch.zeros(L, d, d, device=device, requires_grad=True)
    b = torch.zeros(L, d, device=device, requires_grad=True)
    opt = torch.optim.Adam([A, b], lr=lr)
    losses: list[float] = []
    with frozen_parameters(model):
        for step in range(int(steps)):
            idx = torch.randint(n_tok, (min(batch_tokens, n_tok),), generator=gen)
            x = rows[:, idx].to(device)  # [R, B, d]
            with torch.no_grad():
                target = torch.log_softmax(final_logits(model, x[L]), dim=-1)  # the model's own output
                p_target = target.exp()
            h = x[:L]
            v = h + torch.einsum("rbd,red->rbe", h, A) + b[:, None, :]
            logq = torch.log_softmax(final_logits(model, v), dim=-1)  # [L, B, V]
            kl = (p_target[None] * (target[None] - logq)).sum(-1).mean(-1)  # [L] nats per token
            loss = kl.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(kl.detach().mean()))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"tuned-lens training diverged at step {step} (lr={lr})")
            report(progress, 0.1 + 0.9 * (step + 1) / steps, f"training the tuned lens: step {step + 1}/{steps}")
    info = {
        "model_name": _model_name(session),
        "objective": "KL(model output || lens), mean over tokens, summed over rows (Belrose et al. 2023)",
        "optimizer": f"Adam lr={lr}",
        "steps": int(steps),
        "seed": int(seed),
        "batch_tokens": int(batch_tokens),
        "n_tokens": int(n_tok),
        "max_seq_len": int(max_seq_len),
        "loss_first": round(losses[0], 5),
        "loss_last": round(losses[-1], 5),
        "train_seconds": round(time.perf_counter() - t0, 2),
        "corpus": corpus or "user texts",
    }
    lens = TunedLens.from_translators(A.detach().cpu(), b.detach().cpu(), centre_input=is_layernorm(model), info=info)
    lens.losses = losses  # per-step mean KL (not saved)
    return lens
