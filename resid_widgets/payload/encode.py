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
from resid_widgets.payload.arrays import ARRAY_COMPUTE, ArrayContext, sent
from resid_widgets.payload.protocol import ARRAY_SPECS, GRID_SCALE, PROTOCOL_VERSION, TAU_GRID, extra_header



def payload_arrays(analysis: Analysis, positions: slice = slice(None), *, full: bool = False, tau_grid=TAU_GRID, stage: str | None = None) -> dict[str, np.ndarray]:
    """The payload's arrays (``protocol.json`` ``arrays``, in that order) for a range of positions
    (all by default), each sliced along its position axis (``POSITION_AXIS``); ``stage`` keeps only
    the arrays that stage fills (``lens``, ``done``). Lens cells not read yet have NaN probabilities."""
    a = analysis
    index_dtype = _index_dtype(a)
    ctx = ArrayContext(tau_grid=tuple(tau_grid))
    arrays: dict[str, np.ndarray] = {}
    for name, spec in ARRAY_SPECS.items():
        if (stage is not None and spec["stage"] != stage) or not sent(name, a, full=full):
            continue
        arrays[name] = _wire(ARRAY_COMPUTE[name](a, positions, ctx), spec["dtype"], index_dtype)
    return arrays


def lens_arrays(a: Analysis, p: slice, *, index_dtype=None) -> dict[str, np.ndarray]:
    """The arrays that the lens stage fills (per cell, [R, P, ...])."""
    return payload_arrays(a, p, stage="lens")


def _index_dtype(a: Analysis):
    """uint16 ids and ranks while the vocabulary fits, else int32."""
    d_vocab = int(a.info.get("d_vocab", 0)) or int(a.top_ids.max()) + 1
    return np.uint16 if d_vocab <= np.iinfo(np.uint16).max else np.int32


def _wire(x: np.ndarray, dtype: str, index_dtype) -> np.ndarray:
    """Values in the wire dtype of their ``protocol.json`` entry."""
    if dtype == "index":
        return _ids(np.asarray(x), index_dtype)
    if dtype == "float16":
        return _f16(np.asarray(x))
    return np.asarray(x).astype(dtype)


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
        "bos_positions": [int(i) for i in np.flatnonzero(a.is_bos)],
        "targets": list(a.targets),
        "target_ids": [int(i) for i in a.target_ids],
        "logit_diff": logit_diff,
        "tau": float(a.tau),
        "k": int(a.k),
        "tau_grid": [float(t) for t in tau_grid],
        "k_grid": [int(a.k_for_tau(t)) for t in tau_grid],
        "additivity_holds": bool(a.additivity["holds"]),
        **({"lacks": dict(a.info["lacks"])} if a.info.get("lacks") else {}),  # the backend's missing needs
        **extra_header(),
    }


def encode_delta(
    update, *, seq: int, base_seq: int = 0, client_seq: int = 0, is_demo: bool = False, tau_grid=TAU_GRID
) -> tuple[dict[str, Any], bytes]:
    """One streamed stage as a ``delta`` message ``(content, blob)`` (see js/README.md).

    ``begin``: the header of the new analysis and every array for positions [keep, T) — positions
    [0, keep) equal those of payload ``base_seq``; ``lens``: the lens arrays of positions [p0, p1);
    ``done``: the emergence rows (every position)."""
    a = update.analysis
    p0, p1 = update.positions
    content: dict[str, Any] = {"type": "delta", "version": PROTOCOL_VERSION, "stage": update.stage, "seq": int(seq), "positions": [int(p0), int(p1)]}
    if update.stage == "begin":
        arrays = payload_arrays(a, slice(p0, p1), tau_grid=tau_grid)
        content["meta"] = header(a, seq=seq, client_seq=client_seq, is_demo=is_demo, tau_grid=tau_grid)
        content["keep"] = int(update.keep)
        content["base_seq"] = int(base_seq)
        ids = [a.token_ids, a.top_ids[-1, :, 0]]
    elif update.stage == "lens":
        arrays = payload_arrays(a, slice(p0, p1), tau_grid=tau_grid, stage="lens")
        ids = [a.top_ids[:, p0:p1, 0].reshape(-1)]
    else:
        arrays = payload_arrays(a, tau_grid=tau_grid, stage="done")
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
