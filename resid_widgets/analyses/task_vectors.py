"""Task vectors (seed 003): last-token residual vectors per layer, centred on their mean.

For prompts p = 1..P and residual rows r = 0..R-1 (row 0 = ``blocks.0.hook_resid_pre``, row l+1 =
``blocks.l.hook_resid_post``), the raw vector is ``x[p, r] = resid[r, last real token of p]``. The
centroid is the mean over prompts, ``c[r] = mean_p x[p, r]``, and the task vector is
``v[p, r] = x[p, r] - c[r]``. Per row:

* cosine similarity ``cos(v_p, v_q) = v_p . v_q / (|v_p| |v_q|)`` (0 when either vector is 0);
* 2-D PCA of the centred vectors by a thin SVD ``V = A S B^T`` (no scikit-learn): coordinates
  ``A[:, :2] * S[:2]``, explained-variance ratio ``S_i^2 / sum S^2``; each component's sign is fixed
  so that its largest-magnitude coordinate is positive (deterministic, like scikit-learn's ``svd_flip``);
* magnitude ``|v_p|_2``.

Everything here is numpy; ``compute_task_vectors`` is the only function that touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


def last_token_resid(analyses: Sequence[Any]) -> np.ndarray:
    """[P, R, d]: each analysis' residual rows at its last (real) token."""
    if len(analyses) == 0:
        raise ValueError("no analyses: give at least one prompt")
    return np.stack([np.asarray(a.resid[:, -1, :], dtype=np.float32) for a in analyses])


def centre(vectors: np.ndarray) -> np.ndarray:
    """Subtract the mean over prompts (axis 0)."""
    x = np.asarray(vectors, dtype=np.float64)
    return (x - x.mean(axis=0, keepdims=True)).astype(np.float32)


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    """``[..., P, P]`` cosine similarities of the vectors ``x[..., P, d]``; 0 where a vector is 0."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    return np.clip(unit @ np.swapaxes(unit, -1, -2), -1.0, 1.0)


def pca(x: np.ndarray, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the rows of ``x`` [P, d] by numpy SVD.

    Returns ``(coords [P, n_components], explained_variance_ratio [n_components])``. Components beyond
    the rank of the data are zero (coordinates and ratio).
    """
    x = np.asarray(x, dtype=np.float64)
    a = x - x.mean(axis=0, keepdims=True)
    P = a.shape[0]
    coords = np.zeros((P, n_components))
    ratio = np.zeros(n_components)
    if P == 0:
        return coords, ratio
    U, S, _ = np.linalg.svd(a, full_matrices=False)
    total = float((S**2).sum())
    n = min(n_components, len(S))
    for i in range(n):
        if S[i] <= 1e-12 * max(S[0], 1e-300):
            break
        col = U[:, i] * S[i]
        if col[np.argmax(np.abs(col))] < 0:
            col = -col
        coords[:, i] = col
        ratio[i] = S[i] ** 2 / total if total > 0 else 0.0
    return coords, ratio


@dataclass(frozen=True)
class TaskVectors:
    """Task vectors of P prompts at every residual row."""

    prompts: list[str]
    labels: list[str]
    raw: np.ndarray  # [P, R, d] last-token residual vectors
    vectors: np.ndarray  # [P, R, d] centred (raw minus the mean over prompts)
    norms: np.ndarray  # [P, R] L2 norm of the centred vectors
    cosine: np.ndarray  # [R, P, P]
    pca: np.ndarray  # [R, P, 2]
    explained_variance: np.ndarray  # [R, 2]

    @property
    def n_rows(self) -> int:
        return int(self.raw.shape[1])

    @property
    def unique_labels(self) -> list[str]:
        return list(dict.fromkeys(self.labels))

    def label_norms(self) -> np.ndarray:
        """[n_labels, R]: mean magnitude of the centred vectors of each label (in ``unique_labels`` order)."""
        labels = np.asarray(self.labels, dtype=object)
        return np.stack([self.norms[labels == u].mean(axis=0) for u in self.unique_labels])


def task_vectors_from_raw(raw: np.ndarray, prompts: Sequence[str], labels: Sequence[str] | None = None) -> TaskVectors:
    raw = np.asarray(raw, dtype=np.float32)
    P, R, _ = raw.shape
    labels = list(prompts) if labels is None else [str(l) for l in labels]
    if len(labels) != P:
        raise ValueError(f"got {len(labels)} labels for {P} prompts; give one label per prompt")
    vec = centre(raw)
    per_row = np.swapaxes(vec, 0, 1)  # [R, P, d]
    pcs, evr = zip(*(pca(per_row[r]) for r in range(R)))
    return TaskVectors(
        prompts=list(prompts),
        labels=labels,
        raw=raw,
        vectors=vec,
        norms=np.linalg.norm(vec.astype(np.float64), axis=-1).astype(np.float32),
        cosine=cosine_matrix(per_row).astype(np.float32),
        pca=np.stack(pcs).astype(np.float32),
        explained_variance=np.stack(evr).astype(np.float32),
    )


def compute_task_vectors(session: Any, prompts: Sequence[str], labels: Sequence[str] | None = None) -> TaskVectors:
    """One right-padded batch through ``session``; the last real token of each prompt."""
    prompts = list(prompts)
    if len(prompts) < 2:
        raise ValueError("task vectors need at least two prompts (one prompt minus its own mean is zero)")
    analyses = session.analyze_batch(prompts, top_k=1)
    return task_vectors_from_raw(last_token_resid(analyses), [str(p) for p in prompts], labels)


__all__ = [
    "TaskVectors",
    "centre",
    "compute_task_vectors",
    "cosine_matrix",
    "last_token_resid",
    "pca",
    "task_vectors_from_raw",
]
