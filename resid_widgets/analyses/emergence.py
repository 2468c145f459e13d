"""When a prediction emerges: the first residual row from which a token stays in the lens's top-k.

For a token v at position t, ``in_k[r] = v in top_ids[r, t, :]``; the emergence row is the smallest r
with ``in_k[r'] = True`` for every ``r' >= r`` (to the last row), or -1 when v is not in the last row's
top-k. The model's final top-1 is the top of the last row, so its emergence row always exists.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def emergence_row(in_topk: np.ndarray) -> np.ndarray:
    """``in_topk`` [R, ...] bool -> [...] int32: the first row of the final all-true run, -1 if none."""
    R = in_topk.shape[0]
    stays = np.flip(np.logical_and.accumulate(np.flip(in_topk, 0), axis=0), 0)  # stays[r] = all(in_topk[r:])
    first = R - stays.sum(0)  # the all-true run is a suffix, so its length gives its start
    return np.where(stays[-1], first, -1).astype(np.int32)


def emergence_rows(top_ids: np.ndarray, target_ids: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
    """``top_ids`` [R, T, k] -> (final top-1's emergence row [T], each target's [T, n])."""
    final_top1 = top_ids[-1, :, 0]  # [T]
    final = emergence_row((top_ids == final_top1[None, :, None]).any(-1))
    tgt = np.asarray(list(target_ids), dtype=np.int64)
    if tgt.size == 0:
        return final, np.zeros((top_ids.shape[1], 0), np.int32)
    in_k = (top_ids[..., None, :] == tgt[None, None, :, None]).any(-1)  # [R, T, n]
    return final, emergence_row(in_k)


__all__ = ["emergence_row", "emergence_rows"]
