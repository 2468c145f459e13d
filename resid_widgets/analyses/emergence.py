"""When a prediction emerges: the first row from which a token stays in the lens's top-k to the end.

Pure numpy over the lens's top-k ids, so it works for any lens and costs nothing extra.
"""

from __future__ import annotations

import numpy as np

#: the value for a token that is not in the top-k at the last row (so it never "stays")
NEVER = -1


def emergence_rows(top_ids, final_top1, target_ids=(), *, k: int | None = None):
    """``(emergence_row [T], target_emergence [T, n])`` from the lens's ``top_ids`` [R, T, k].

    For each position t, ``emergence_row[t]`` is the smallest row r such that ``final_top1[t]`` is in
    the lens's top-k at every row r, r+1, ..., R-1; ``target_emergence[t, j]`` the same for
    ``target_ids[j]``. ``NEVER`` (-1) when the token is not in the top-k at the last row. ``k``
    (<= the top_ids' k) uses only the first k columns.
    """
    top = np.asarray(top_ids)
    if top.ndim != 3:
        raise ValueError(f"top_ids must be [rows, positions, k], got shape {top.shape}")
    if k is not None:
        if not 1 <= int(k) <= top.shape[2]:
            raise ValueError(f"k must be between 1 and {top.shape[2]}, got {k}")
        top = top[:, :, : int(k)]
    R, T, _ = top.shape
    final = np.asarray(final_top1).reshape(-1)
    if final.shape != (T,):
        raise ValueError(f"final_top1 must have one id per position ({T}), got shape {np.shape(final_top1)}")
    targets = np.asarray(list(target_ids) if not isinstance(target_ids, np.ndarray) else target_ids).reshape(-1)
    # ids to test at each position: [T, 1 + n]
    want = np.concatenate([final[:, None], np.broadcast_to(targets[None, :], (T, targets.size))], axis=1)
    inside = (top[:, :, :, None] == want[None, :, None, :]).any(axis=2)  # [R, T, 1 + n]
    # stays[r] = inside at every row from r to the end (a reverse cumulative AND)
    stays = np.flip(np.logical_and.accumulate(np.flip(inside, axis=0), axis=0), axis=0)
    first = np.argmax(stays, axis=0)  # first True (0 when none: fixed below)
    first = np.where(stays[-1], first, NEVER).astype(np.int64)
    return first[:, 0], first[:, 1:]
