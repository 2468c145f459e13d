"""``Analysis`` -> ``(meta, blob)`` for the browser, and back (for tests and tools).

Per heatmap cell (R rows x T positions, G tau-grid points, n targets) the payload holds::

    top1_id u16 (2) + top1_prob f16 (2) + proj_pct f16 (2) + proj_grid uint8 (G) + resid_norm f16 (2)
    + attn/mlp norm f16 (2 + 2, L of R rows) + entropy f16 (2) + KL f16 (2) + final top-1 rank u16 (2)
    + n x (rank u16 2 + prob f16 2) [+ logit_diff f16 2]

~= 18 + G + 4n (+2) bytes: 38 with the default G = 20 and no targets, 48 with two targets and their
logit difference, plus the token strings and per-position rows (emergence). Ids and ranks are uint16 while the vocabulary has fewer
than 65,536 tokens (GPT-2: 50,257) and int32 beyond. Token strings travel once per distinct id; the full top-k list of a cell is fetched on
demand (``details`` message) unless ``full=True`` (the static HTML export, which has no kernel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resid_widgets.analyses.result import Analysis
from resid_widgets.payload.codec import pack_arrays, unpack_arrays
from resid_widgets.analyses.projection import pct_at_k
from resid_widgets.payload.protocol import GRID_SCALE, PROTOCOL_VERSION, TAU_GRID



def payload_arrays(analysis: Analysis, positions: slice = slice(None), *, full: bool = False, tau_grid=TAU_GRID) -> dict[str, np.ndarray]:
    """The payload's arrays for a range of positions (all by default), each sliced along its
    position axis (``POSITION_AXIS``). Lens cells not read yet have NaN probabilities."""
    a = analysis
    d_vocab = int(a.info.get("d_vocab", 0)) or int(a.top_ids.max()) + 1
    index_dtype = np.uint16 if d_vocab <= np.iinfo(np.uint16).max else np.int32
    p = positions
    grid = np.stack([pct_at_k(a._proj_cum[:, p], a.k_for_tau(t)) for t in tau_grid])  # [G, R, P]
    arrays: dict[str, np.ndarray] = {
        "token_ids": a.token_ids[p].astype(index_dtype),
        "proj_pct": a.projection_pct[:, p].astype(np.float16),
        "proj_grid": np.clip(np.rint(grid * GRID_SCALE), 0, 255).astype(np.uint8),
        "proj_final": a.projection_final_pct[p].astype(np.float16),
        "resid_norm": _f16(a.resid_norm[:, p]),
        "attn_norm": _f16(a.attn_norm[:, p]),
        "mlp_norm": _f16(a.mlp_norm[:, p]),
        "emergence": a.emergence_row[p].astype(np.int32),
        **lens_arrays(a, p, index_dtype=index_dtype),
    }
    if a.targets:
        arrays["target_emergence"] = a.target_emergence[p].astype(np.int32)
    if full:
        arrays["top_ids"] = _ids(a.top_ids[:, p], index_dtype)
        arrays["top_probs"] = a.top_probs[:, p].astype(np.float16)
    return arrays


def lens_arrays(a: Analysis, p: slice, *, index_dtype) -> dict[str, np.ndarray]:
    """The arrays that the lens stage fills (per cell, [R, P, ...])."""
    arrays = {
        "top1_id": _ids(a.top_ids[:, p, 0], index_dtype),
        "top1_prob": a.top_probs[:, p, 0].astype(np.float16),
        "entropy": _f16(a.entropy[:, p]),
        "kl": _f16(a.kl_to_output[:, p]),
        "final_rank": _ids(a.final_top1_rank[:, p], index_dtype),
    }
    if a.targets:
        arrays["target_rank"] = _ids(a.target_ranks[:, p], index_dtype)
        arrays["target_prob"] = a.target_probs[:, p].astype(np.float16)
        if len(a.targets) >= 2:
            arrays["logit_diff"] = _f16(a.logit_diff(a.targets[0], a.targets[1])[:, p])
    return arrays


def encode_analysis(
    analysis: Analysis,
    *,
    seq: int = 0,
    client_seq: int = 0,
    is_demo: bool = False,
    full: bool = False,
    tau_grid: tuple[float, ...] = TAU_GRID,
) -> tuple[dict[str, Any], bytes]:
    a = analysis
    arrays = payload_arrays(a, full=full, tau_grid=tau_grid)
    index, blob = pack_arrays(arrays)
    ids_with_text = [a.token_ids, a.top_ids[..., 0].reshape(-1)]
    if full:
        ids_with_text.append(a.top_ids.reshape(-1))
    meta = header(a, seq=seq, client_seq=client_seq, is_demo=is_demo, tau_grid=tau_grid)
    meta["strings"] = _strings(a, ids_with_text)
    meta["arrays"] = index
    return meta, blob


def header(a: Analysis, *, seq: int, client_seq: int = 0, is_demo: bool = False, tau_grid=TAU_GRID) -> dict[str, Any]:
    """The JSON header of a payload (without ``strings`` and ``arrays``)."""
    logit_diff = {"answer": a.targets[0], "counterfactual": a.targets[1]} if len(a.targets) >= 2 else None
    return {
        "version": PROTOCOL_VERSION,
        "seq": int(seq),
        "client_seq": int(client_seq),
        "model_name": a.model_name,
        "is_demo": bool(is_demo),
        "prompt": a.prompt if a.prompt is not None else "".join(a.tokens),
        "n_layers": a.n_layers,
        "n_rows": a.n_rows,
        "n_tokens": a.n_tokens,
        "top_k": a.top_k,
        "lens": a.lens,
        "d_model": int(a.info.get("d_model", a.resid.shape[-1] if a.resid is not None else 0)),
        "d_vocab": int(a.info.get("d_vocab", 0)),
        "row_labels": a.row_labels,
        "hook_names": list(a.hook_names),
        "has_bos": bool(a.is_bos.any()),
        "targets": list(a.targets),
        "target_ids": [int(i) for i in a.target_ids],
        "logit_diff": logit_diff,
        "tau": float(a.tau),
        "k": int(a.k),
        "tau_grid": [float(t) for t in tau_grid],
        "k_grid": [int(a.k_for_tau(t)) for t in tau_grid],
        "additivity_holds": bool(a.additivity["holds"]),
    }


def encode_delta(
    update, *, seq: int, base_seq: int = 0, client_seq: int = 0, is_demo: bool = False, tau_grid=TAU_GRID
) -> tuple[dict[str, Any], bytes]:
    """One streamed stage as a ``delta`` message ``(content, blob)`` (see js/README.md).

    ``begin``: the header of the new analysis and every array for positions [keep, T) — positions
    [0, keep) equal those of payload ``base_seq``; ``lens``: the lens arrays of positions [p0, p1);
    ``done``: the emergence rows (every position)."""
    a = update.analysis
    d_vocab = int(a.info.get("d_vocab", 0)) or int(a.top_ids.max()) + 1
    index_dtype = np.uint16 if d_vocab <= np.iinfo(np.uint16).max else np.int32
    p0, p1 = update.positions
    content: dict[str, Any] = {"type": "delta", "version": PROTOCOL_VERSION, "stage": update.stage, "seq": int(seq), "positions": [int(p0), int(p1)]}
    if update.stage == "begin":
        arrays = payload_arrays(a, slice(p0, p1), tau_grid=tau_grid)
        content["meta"] = header(a, seq=seq, client_seq=client_seq, is_demo=is_demo, tau_grid=tau_grid)
        content["keep"] = int(update.keep)
        content["base_seq"] = int(base_seq)
        ids = [a.token_ids, a.top_ids[-1, :, 0]]
    elif update.stage == "lens":
        arrays = lens_arrays(a, slice(p0, p1), index_dtype=index_dtype)
        ids = [a.top_ids[:, p0:p1, 0].reshape(-1)]
    else:
        arrays = {"emergence": a.emergence_row.astype(np.int32)}
        if a.targets:
            arrays["target_emergence"] = a.target_emergence.astype(np.int32)
        ids = []
    index, blob = pack_arrays(arrays)
    content["arrays"] = index
    content["strings"] = _strings(a, ids) if ids else {}
    return content, blob


def _strings(a: Analysis, ids: list[np.ndarray]) -> dict[str, str]:
    wanted = np.unique(np.concatenate([np.asarray(i, dtype=np.int64).reshape(-1) for i in ids]))
    return {str(int(i)): a.strings[int(i)] for i in wanted if i >= 0}


def _ids(x: np.ndarray, dtype) -> np.ndarray:
    """Token ids / ranks for the payload; unread cells (-1) become the dtype's largest value."""
    if dtype == np.uint16:
        return np.where(x < 0, np.iinfo(np.uint16).max, x).astype(np.uint16)
    return x.astype(dtype)


def cell_details(analysis: Analysis, pos: int) -> dict[str, Any]:
    """The full top-k of every row at one position (the hover tooltip's lazy request)."""
    if not 0 <= pos < analysis.n_tokens:
        raise IndexError(f"position {pos} is outside the prompt (0..{analysis.n_tokens - 1})")
    ids = analysis.top_ids[:, pos]
    return {
        "pos": int(pos),
        "top_ids": ids.astype(int).tolist(),
        "top_probs": [[float(p) for p in row] for row in analysis.top_probs[:, pos]],
        "strings": {str(int(i)): analysis.strings[int(i)] for i in np.unique(ids) if i >= 0},  # -1: not read yet
    }


def decode_payload(meta: dict[str, Any], blob: bytes) -> dict[str, np.ndarray]:
    """Arrays of a payload, with proj_grid turned back into percentages."""
    arrays = unpack_arrays(meta["arrays"], blob)
    arrays["proj_grid_pct"] = arrays["proj_grid"].astype(np.float32) / GRID_SCALE
    return arrays


def _f16(x: np.ndarray) -> np.ndarray:
    """float16 without overflow to inf (norms of large models can exceed 65504)."""
    return np.clip(x, -65504, 65504).astype(np.float16)
