"""Independent reference computations shared by the tests (one place; never the package's own functions).

Everything here starts from TransformerLens's own ``run_with_cache`` of one unpadded prompt, the model's
weights and numpy, so a test comparing the package against these checks the package, not itself.
"""

from __future__ import annotations

import numpy as np
import torch


def single_run(model, tokens_or_prompt):
    """Tokens [T], logits [T, V] and the cache of one unpadded prompt (a string or token ids)."""
    if isinstance(tokens_or_prompt, str):
        tokens = model.to_tokens(tokens_or_prompt)
    else:
        tokens = torch.as_tensor([list(tokens_or_prompt)])
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
    return tokens[0], logits[0].float(), cache


def resid_rows(model, cache) -> torch.Tensor:
    """[R, T, d]: ``blocks.0.hook_resid_pre`` then every ``blocks.l.hook_resid_post``."""
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]
    return torch.stack([cache[n][0].float() for n in names])


def lens_logits(model, resid: torch.Tensor) -> torch.Tensor:
    """``ln_final(r) @ W_U + b_U`` with each vector's own normalisation (any leading shape)."""
    with torch.no_grad():
        return model.ln_final(resid) @ model.W_U.float() + model.b_U.float()


def svd_projection(W_U: np.ndarray, vectors: np.ndarray, tau: float):
    """(k, S, cumulative energy, projection % [...]) from a float64 numpy SVD of W_U [d, V]:
    k = smallest with energy >= tau, projection = 100 * |U_k^T v|^2 / |v|^2."""
    U, S, _ = np.linalg.svd(np.asarray(W_U, dtype=np.float64), full_matrices=False)
    energy = np.cumsum(S**2) / np.sum(S**2)
    k = int(np.argmax(energy >= tau - 1e-12)) + 1
    v = np.asarray(vectors, dtype=np.float64)
    pct = 100 * np.sum((v @ U[:, :k]) ** 2, -1) / np.sum(v**2, -1)
    return k, S, energy, pct


def output_norms(model, cache, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """([L, T'], [L, T']): ‖attn_out‖₂ and ‖mlp_out‖₂ per layer from position ``start`` on."""
    L = model.cfg.n_layers
    attn = np.stack([cache[f"blocks.{l}.hook_attn_out"][0, start:].norm(dim=-1).numpy() for l in range(L)])
    mlp = np.stack([cache[f"blocks.{l}.hook_mlp_out"][0, start:].norm(dim=-1).numpy() for l in range(L)])
    return attn, mlp
