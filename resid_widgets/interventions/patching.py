"""Activation patching of the residual stream, from a clean prompt into a corrupted one.

For layer l and position p, the *patched* run is the corrupted prompt's forward pass with
``blocks.{l}.hook_resid_pre`` at position p replaced by the clean run's value there. With
``LD(run) = logit[answer] − logit[counterfactual]`` at the last position::

    score[l, p] = (LD(patched l, p) − LD(corrupted)) / (LD(clean) − LD(corrupted))

(1: the patch restores the clean answer; 0: no effect), exactly what TransformerLens's
``patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, metric)`` computes with that
metric. Cost: block l's input does not depend on the blocks before it once it is given, so each layer
runs only blocks l .. L−1, from the corrupted run's cached residual, for all T positions in one batch
(each batch element patches one position): ``sum_l (L − l) / L · T = T (L + 1) / 2`` forward passes
instead of TransformerLens's ``L · T``. The blocks are replayed with the arguments the model passed them
in the corrupted run (attention mask, rotary embeddings); a self-check replays the unpatched residual
first and falls back to hooked full forward passes (batched over positions) if it does not reproduce
the corrupted logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from resid_widgets import hooks
from resid_widgets.lenses.base import final_logits

#: keyword arguments of a block call that carry a key/value cache (dropped when a block is replayed)
_CACHE_KWARGS = ("past_key_values", "past_key_value", "layer_past", "cache")


@dataclass
class PatchingResult:
    """One patching experiment. ``scores`` [L, T]; ``patched_ld`` [L, T] the patched runs' logit differences."""

    scores: np.ndarray
    patched_ld: np.ndarray
    clean_ld: float
    corrupted_ld: float
    clean_tokens: list[str]
    corrupted_tokens: list[str]
    answer: str
    counterfactual: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.scores.shape[0])


def patch_resid(session: Any, clean: Any, corrupted: Any, answer: str | int, counterfactual: str | int) -> np.ndarray:
    """``score`` [layers, positions] of patching ``blocks.{l}.hook_resid_pre`` at one position from the clean run
    into the corrupted one (see the module docstring)."""
    return patching_experiment(session, clean, corrupted, answer, counterfactual).scores


def patching_experiment(session: Any, clean: Any, corrupted: Any, answer: str | int, counterfactual: str | int, *,
                        method: str = "replay") -> PatchingResult:
    """``patch_resid`` with everything a viewer shows: both runs' tokens and logit differences, the patched ones.

    ``method``: ``"replay"`` (blocks l.. from the cached residual, the default) or ``"hooks"`` (full hooked
    forward passes, batched over positions; the reference)."""
    if method not in ("replay", "hooks"):
        raise ValueError(f"method must be 'replay' or 'hooks', not {method!r}")
    with session._lock:
        clean_ids, _ = session.to_token_ids(clean)
        corr_ids, _ = session.to_token_ids(corrupted)
        if len(clean_ids) != len(corr_ids):
            raise ValueError(
                f"the clean prompt is {len(clean_ids)} tokens and the corrupted prompt {len(corr_ids)} tokens; patching "
                "needs prompts of the same token length (position p of one is patched into position p of the other)"
            )
        (names, (a, c)) = _answer_ids(session, answer, counterfactual)
        L = session.n_layers
        clean_logits, clean_cache, _ = _run(session, clean_ids)
        corr_logits, corr_cache, calls = _run(session, corr_ids)
        ld = lambda z: z[..., a] - z[..., c]  # noqa: E731
        clean_ld, corr_ld = float(ld(clean_logits[-1])), float(ld(corr_logits[-1]))
        fallback = ""
        patched = None
        if method == "replay":
            check = _replay(session, calls, corr_cache[hooks.resid_pre(0)][None], 0)
            err = float((ld(check) - corr_ld).abs().max()) if check is not None else float("inf")
            if err <= 1e-4 * max(1.0, abs(corr_ld)):
                patched = torch.stack([_replay(session, calls, _patched_batch(clean_cache, corr_cache, l), l) for l in range(L)])
            else:
                fallback = f"replaying the blocks did not reproduce the corrupted run (|error| {err:.3g}); used hooks"
        if patched is None:
            patched = torch.stack([_hooked(session, corr_ids, clean_cache, l) for l in range(L)])
        patched_ld = ld(patched).double().cpu().numpy()  # [L, T]
        denom = clean_ld - corr_ld
        if denom == 0:
            raise ValueError(
                f"the clean and corrupted runs give the same logit difference {clean_ld:.4g} between {names[0]!r} and "
                f"{names[1]!r}: the normalised patching score is undefined; pick prompts or answers that differ"
            )
        strings = session.token_strings(np.concatenate([clean_ids, corr_ids]))
        return PatchingResult(
            scores=((patched_ld - corr_ld) / denom).astype(np.float32),
            patched_ld=patched_ld.astype(np.float32),
            clean_ld=clean_ld,
            corrupted_ld=corr_ld,
            clean_tokens=[strings[int(i)] for i in clean_ids],
            corrupted_tokens=[strings[int(i)] for i in corr_ids],
            answer=names[0],
            counterfactual=names[1],
            info={"method": "hooks" if fallback or method == "hooks" else "replay", "fallback": fallback,
                  "model_name": session.name, "hook": "blocks.{l}.hook_resid_pre"},
        )


def _answer_ids(session: Any, answer: Any, counterfactual: Any) -> tuple[list[str], list[int]]:
    for what, x in (("answer", answer), ("counterfactual", counterfactual)):
        if x is None or (isinstance(x, str) and not x):
            raise ValueError(f"the {what} is empty; give one token (text or id)")
    names, ids = session.resolve_targets([answer, counterfactual])
    if ids[0] == ids[1]:
        raise ValueError(f"the answer and the counterfactual are the same token {names[0]!r}; give two different tokens")
    return names, ids


def _run(session: Any, ids: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[int, tuple]]:
    """One forward pass: logits [T, V], every block's resid_pre [T, d], each block's call arguments."""
    L = session.n_layers
    names = {hooks.resid_pre(l) for l in range(L)}
    calls: dict[int, tuple] = {}
    handles = []
    for i, block in enumerate(getattr(session.model, "blocks", [])):
        def pre(mod, args, kwargs, i=i):
            calls[i] = (args[1:], {k: v for k, v in kwargs.items() if k not in _CACHE_KWARGS})
        handles.append(block.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        with torch.inference_mode():
            logits, cache = session.model.run_with_cache(torch.as_tensor(ids)[None].to(session.device),
                                                         names_filter=lambda n: n in names, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return logits[0].float(), {k: cache[k][0] for k in names}, calls


def _patched_batch(clean: dict[str, torch.Tensor], corrupted: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """[T, T, d]: element p is the corrupted resid_pre of ``layer`` with position p taken from the clean run."""
    x, y = corrupted[hooks.resid_pre(layer)], clean[hooks.resid_pre(layer)]
    T = x.shape[0]
    batch = x[None].repeat(T, 1, 1)
    idx = torch.arange(T, device=x.device)
    batch[idx, idx] = y
    return batch


def _replay(session: Any, calls: dict[int, tuple], resid: torch.Tensor, layer: int) -> torch.Tensor | None:
    """The last position's logits [B, V] of running blocks ``layer`` .. L-1 on ``resid`` [B, T, d]."""
    blocks = getattr(session.model, "blocks", None)
    if blocks is None or len(calls) != session.n_layers:
        return None
    h = resid
    try:
        with torch.inference_mode():
            for i in range(layer, session.n_layers):
                args, kwargs = calls[i]
                out = blocks[i](h, *args, **kwargs)
                h = out[0] if isinstance(out, tuple) else out
            return final_logits(session.model, h[:, -1])
    except Exception:  # a block that cannot be called on its own: the caller falls back to hooks
        return None


def _hooked(session: Any, ids: np.ndarray, clean: dict[str, torch.Tensor], layer: int) -> torch.Tensor:
    """The last position's logits [T, V] of T hooked forward passes (one batch), element p patched at p."""
    y = clean[hooks.resid_pre(layer)]
    T = len(ids)
    idx = torch.arange(T, device=y.device)

    def patch(x, hook=None):
        out = x.clone()
        out[idx, idx] = y.to(x.dtype)
        return out

    batch = torch.as_tensor(ids)[None].repeat(T, 1).to(session.device)
    with torch.inference_mode():
        logits = session.model.run_with_hooks(batch, fwd_hooks=[(hooks.resid_pre(layer), patch)], use_cache=False)
    return logits[:, -1].float()


__all__ = ["PatchingResult", "patch_resid", "patching_experiment"]
