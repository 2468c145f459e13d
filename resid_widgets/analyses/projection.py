"""Projection of residual vectors onto the unembedding's token subspace (seed 000).

With the thin SVD ``W_U = U S V^T`` (``W_U`` is [d_model, d_vocab], so ``U`` is [d_model, m],
m = min(d_model, d_vocab)), the energy captured by the first k directions is
``E(k) = sum_{i<=k} S_i^2 / sum_i S_i^2``. For a threshold tau in (0, 1], ``k(tau)`` is the
smallest k with ``E(k) >= tau`` and the projection percentage of a vector r is::

    pct(r) = 100 * ||U_k^T r||^2 / ||r||^2        (0 when r = 0)

Because U's columns are orthonormal, ``||U_k^T r||^2`` is the cumulative sum of the squared
coordinates ``(U^T r)_i^2``; keeping that cumulative curve per vector lets any tau be re-thresholded
without a new forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class TokenSubspace:
    """SVD of an unembedding matrix, computed once per model."""

    U: torch.Tensor  # [d_model, m], float32
    singular_values: np.ndarray  # [m]
    cumulative_energy: np.ndarray  # [m], E(k) for k = 1..m

    @classmethod
    def from_unembed(cls, W_U: torch.Tensor) -> "TokenSubspace":
        W = W_U.detach().to(torch.float32)
        U, S, _ = torch.linalg.svd(W, full_matrices=False)
        S2 = S.double() ** 2
        energy = (torch.cumsum(S2, 0) / S2.sum()).numpy()
        return cls(U=U, singular_values=S.numpy().astype(np.float32), cumulative_energy=energy)

    def k_for_tau(self, tau: float) -> int:
        return k_for_tau(self.cumulative_energy, tau)


def check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
        raise TypeError(f"tau must be a number in (0, 1], got {type(tau).__name__} {tau!r}")
    tau = float(tau)
    if not (0.0 < tau <= 1.0) or np.isnan(tau):
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    return tau


def k_for_tau(cumulative_energy: np.ndarray, tau: float) -> int:
    """Smallest k (1-based) with cumulative energy >= tau (float rounding tolerated at tau = 1)."""
    tau = check_tau(tau)
    idx = int(np.searchsorted(cumulative_energy, tau - 1e-12, side="left"))
    return min(idx + 1, len(cumulative_energy))


def cumulative_fraction(resid: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``[..., m]``: fraction of ``||r||^2`` captured by the first k directions, for k = 1..m.

    Zero vectors give 0 everywhere.
    """
    r = resid.to(torch.float32)
    coords = r @ U.to(r.device)
    cum = torch.cumsum(coords.square(), dim=-1)
    norm2 = r.square().sum(-1, keepdim=True)
    return torch.where(norm2 > 0, cum / norm2.clamp_min(torch.finfo(torch.float32).tiny), torch.zeros_like(cum))


def pct_at_k(cum_fraction: np.ndarray, k: int) -> np.ndarray:
    """Projection percentage at k dims from a cumulative-fraction array [..., m]."""
    return (100.0 * cum_fraction[..., k - 1]).astype(np.float32)
