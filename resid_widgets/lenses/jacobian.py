"""The Jacobian lens (Gurnee et al. 2026): one d x d transport matrix per residual row.

``J_r`` is the average Jacobian of the model's final residual with respect to row r, estimated
exactly as TransformerLens 4.3's ``tools.analysis.JacobianLens.fit`` does (the estimator of
Anthropic's reference implementation): per prompt, a one-hot cotangent on output dimension i at
every valid position at once gives, by causality, ``sum_{t' >= t} d h_final[t', i] / d h_r[t]`` at
each source position t; that row is averaged over the valid source positions (the first
``skip_first_positions`` and the last position excluded), then over prompts. Reading row r is the
model's own final readout of ``J_r @ r``; the last row's transport is the identity.

How it meets our rows. TransformerLens fits on a *raw* bridge's ``blocks.{l}.hook_out`` (our rows
1..L-1) and refuses compatibility-mode bridges. We run the same estimator on the session's own
(compatibility-mode) hooks, which also gives row 0 (the embeddings), which TransformerLens does not
fit. For a LayerNorm model the compatibility-mode rows are the raw rows minus their mean; every block
reads its input through a LayerNorm, so ``J 1 = 1`` and a shift along the all-ones vector passes
through J unchanged and is removed by the final LayerNorm: ``ln(J r_compat) = ln(J r_raw)``. The
two estimates differ only by ``J_compat = P J_raw + 11^T/d`` (P the centring projector), which the
final norm cannot see, so a matrix fitted on either basis reads the other's rows identically
(tests/test_lenses.py checks the matrices and the readouts against TransformerLens on the same
model). The lens also centres its input on LayerNorm models, so raw rows read exactly like centred
ones. RMSNorm models: compatibility mode leaves the rows unchanged, so the matrices are the same.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from resid_widgets.lenses.base import (
    Lens,
    Progress,
    _model_name,
    frozen_parameters,
    is_layernorm,
    model_of,
    register,
    report,
    row_hook_names,
    tokenize,
)

#: TransformerLens's defaults (attention-sink positions are excluded from the average).
DEFAULT_SKIP_FIRST_POSITIONS = 16
DEFAULT_MAX_SEQ_LEN = 128


@register
class JacobianLens(Lens):
    """``v_r = J_r @ x`` at row r (rows without a matrix, and the last row, are the identity)."""

    kind = "jacobian"

    @property
    def jacobians(self) -> dict[int, torch.Tensor]:
        return self.matrices

    @classmethod
    def identity(cls, session_or_model: Any, *, centre_input: bool = False) -> "JacobianLens":
        """Identity matrices at every row but the last: reads exactly like the logit lens (bit for bit when
        ``centre_input`` is False; with it, up to rounding on a LayerNorm model)."""
        model = model_of(session_or_model)
        L, d = int(model.cfg.n_layers), int(model.W_U.shape[0])
        return cls(L + 1, d, matrices={r: torch.eye(d) for r in range(L)}, centre_input=centre_input,
                   info={"model_name": _model_name(session_or_model)})

    # -- TransformerLens artifacts ----------------------------------------------------------------
    @classmethod
    def from_transformer_lens(cls, tl_lens: Any, session_or_model: Any) -> "JacobianLens":
        """Our lens from a TransformerLens ``JacobianLens`` (its layer l = the output of block l = our row l + 1).

        TransformerLens does not fit the embeddings, so row 0 stays the identity (the logit lens there).
        """
        model = model_of(session_or_model)
        L, d = int(model.cfg.n_layers), int(model.W_U.shape[0])
        if int(tl_lens.d_model) != d:
            raise ValueError(f"the TransformerLens lens has d_model={tl_lens.d_model}, the model {d}")
        bad = [l for l in tl_lens.source_layers if not 0 <= l < L - 1]
        if bad:
            raise ValueError(f"the TransformerLens lens has source layers {bad} outside 0..{L - 2} for this {L}-layer model")
        info = {k: v for k, v in tl_lens.metadata.items() if isinstance(v, (str, int, float, bool, type(None)))}
        info.update(source="transformer_lens", n_prompts=int(tl_lens.n_prompts), basis="raw bridge hook_out",
                    model_name=info.get("model_name") or _model_name(session_or_model))
        return cls(L + 1, d, matrices={l + 1: J for l, J in tl_lens.jacobians.items()}, centre_input=is_layernorm(model),
                   info=info)

    def to_transformer_lens(self) -> Any:
        """A TransformerLens ``JacobianLens`` with rows 1..L-1 as its layers 0..L-2 (row 0 has no place there)."""
        from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

        mats = {r - 1: m for r, m in self.matrices.items() if r >= 1}
        if not mats:
            raise ValueError("this lens has no matrix for rows 1..L-1")
        return TLJacobianLens(mats, n_prompts=max(1, int(self.info.get("n_prompts", 1))), d_model=self.d_model)

    @classmethod
    def load(cls, path: str | os.PathLike, *, session_or_model: Any = None) -> "JacobianLens":
        """A lens file from :meth:`save`, or a TransformerLens / reference-implementation artifact (``.pt``,
        e.g. one published for the model; needs ``session_or_model`` to place its layers)."""
        path = Path(path)
        if path.suffix == ".pt":
            if session_or_model is None:
                raise ValueError("loading a TransformerLens .pt artifact needs session_or_model (to map its layers)")
            if not path.is_file():
                raise FileNotFoundError(f"no lens file at {path}")
            from resid_widgets.lenses.published import load_transformer_lens_pt

            return load_transformer_lens_pt(path, session_or_model)  # checked against the model before it is read
        return super().load(path, session_or_model=session_or_model)  # type: ignore[return-value]


def fit_jacobian_lens(
    session: Any,
    prompts: Sequence[str | Sequence[int]],
    *,
    progress: Progress | None = None,
    rows: Sequence[int] | None = None,
    max_seq_len: int = DEFAULT_MAX_SEQ_LEN,
    skip_first_positions: int = DEFAULT_SKIP_FIRST_POSITIONS,
    dim_batch: int = 32,
    corpus: str | None = None,
) -> JacobianLens:
    """Fit a Jacobian lens on the session's own model (TransformerLens's estimator, on our rows).

    ``prompts`` are texts (BOS prepended the model's way) or token-id sequences, truncated to
    ``max_seq_len``; a prompt with no valid position (``len <= skip_first_positions + 1``) is
    skipped and counted in ``info["n_skipped"]``. ``rows`` defaults to every row but the last.
    ``dim_batch`` output dimensions share one backward pass (memory grows with it, total work does
    not much). ``progress(fraction, stage)`` is called after every prompt. Deterministic.
    """
    model = model_of(session)
    L, d = int(model.cfg.n_layers), int(model.W_U.shape[0])
    rows = list(range(L)) if rows is None else sorted({int(r) % (L + 1) for r in rows})
    if not rows or rows[-1] >= L:
        raise ValueError(f"rows must be in 0..{L - 1} (row {L} is the model's output, always the identity), got {rows}")
    if isinstance(prompts, str) or not len(prompts):
        raise ValueError("fit_jacobian_lens needs a non-empty list of prompts")
    if dim_batch < 1 or skip_first_positions < 0 or max_seq_len < 2:
        raise ValueError("dim_batch must be >= 1, skip_first_positions >= 0 and max_seq_len >= 2")
    if getattr(model, "training", False):
        raise ValueError("the model is in training mode; call model.eval() first")
    dim_batch = min(int(dim_batch), d)
    names = row_hook_names(L)
    sources, target_name = [names[r] for r in rows], names[L]
    sums = {r: torch.zeros(d, d, dtype=torch.float64) for r in rows}
    n_done = n_skipped = 0
    t0 = time.perf_counter()
    report(progress, 0.0, "fitting the Jacobian lens")
    with frozen_parameters(model):
        for i, prompt in enumerate(prompts):
            tokens = tokenize(model, prompt, max_seq_len)
            if len(tokens) <= skip_first_positions + 1:
                n_skipped += 1
                continue
            per_prompt = _jacobian_rows(model, tokens, sources, target_name, dim_batch, skip_first_positions)
            for r, J in zip(rows, per_prompt):
                sums[r] += J
            n_done += 1
            report(progress, (i + 1) / len(prompts), f"fitting the Jacobian lens: prompt {i + 1}/{len(prompts)}")
    if n_done == 0:
        raise ValueError(f"every prompt was too short: each needs more than {skip_first_positions + 1} tokens "
                         f"(skip_first_positions={skip_first_positions})")
    info = {
        "model_name": _model_name(session),
        "estimator": "jacobian_lens (TransformerLens 4.3 / reference estimator) on compatibility-mode rows",
        "n_prompts": n_done,
        "n_skipped": n_skipped,
        "max_seq_len": int(max_seq_len),
        "skip_first_positions": int(skip_first_positions),
        "corpus": corpus or "user prompts",
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }
    return JacobianLens(L + 1, d, matrices={r: (s / n_done).float() for r, s in sums.items()},
                        centre_input=is_layernorm(model), info=info)


class _StopForward(Exception):
    """Raised by the target hook to end the forward pass early."""


def _jacobian_rows(model, tokens, sources, target_name, dim_batch, skip_first) -> list[torch.Tensor]:
    """One prompt's Jacobian estimate for each source hook (the reference estimator, see the module doc)."""
    d = int(model.W_U.shape[0])
    T = len(tokens)
    device = model.W_U.device
    valid = torch.arange(skip_first, T - 1, device=device)
    captured: dict[str, torch.Tensor] = {}
    root = sources[0]  # rows are sorted, so the first source is the earliest hook

    def capture(name):
        def fn(act, hook):
            if name == root:
                act.requires_grad_(True)
            captured[name] = act
            if name == target_name:  # nothing after the final residual is needed: skip ln_final and W_U
                raise _StopForward
            return act

        return fn

    hooks = [(n, capture(n)) for n in dict.fromkeys([*sources, target_name])]
    try:
        with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
            model(tokens[None].expand(dim_batch, -1).to(device), return_type=None)
    except _StopForward:
        pass
    if target_name not in captured:
        raise RuntimeError(f"the model never reached {target_name}")
    target = captured[target_name]
    srcs = [captured[n] for n in sources]
    out = [torch.zeros(d, d, dtype=torch.float64) for _ in sources]
    cot = torch.zeros_like(target)
    b = torch.arange(dim_batch, device=device)
    n_passes = -(-d // dim_batch)
    for p in range(n_passes):
        start = p * dim_batch
        n = min(dim_batch, d - start)
        cot.zero_()
        cot[b[:n, None], valid[None, :], start + b[:n, None]] = 1.0
        grads = torch.autograd.grad(target, srcs, grad_outputs=cot, retain_graph=p < n_passes - 1, allow_unused=True)
        for k, g in enumerate(grads):
            if g is None:  # the target does not depend on this row (cannot happen for a residual stream)
                raise RuntimeError(f"the final residual does not depend on {sources[k]}")
            out[k][start : start + n] = g[:n, valid].double().mean(dim=1).cpu()
    return out
