"""``Analysis`` -> ``(meta, blob)`` for the browser, and back (for tests and tools).

Per heatmap cell (R rows x T positions, G tau-grid points, n targets) the payload holds::

    top1_id u16 (2) + top1_prob f16 (2) + proj_pct f16 (2) + proj_grid uint8 (G) + resid_norm f16 (2)
    + attn/mlp norm f16 (2 + 2, L of R rows) + n x (rank u16 2 + prob f16 2) [+ logit_diff f16 2]

~= 12 + G + 4n (+2) bytes: 32 with the default G = 20 and no targets, 42 with two targets and their
logit difference, plus the token strings. Ids and ranks are uint16 while the vocabulary has fewer
than 65,536 tokens (GPT-2: 50,257) and int32 beyond. Token strings travel once per distinct id; the full top-k list of a cell is fetched on
demand (``details`` message) unless ``full=True`` (the static HTML export, which has no kernel).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resid_widgets.analyses.result import Analysis
from resid_widgets.payload.codec import pack_arrays, unpack_arrays
from resid_widgets.payload.protocol import GRID_SCALE, PROTOCOL_VERSION, TAU_GRID



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
    R, T, L = a.n_rows, a.n_tokens, a.n_layers
    grid = np.stack([a.projection_at(t) for t in tau_grid])  # [G, R, T]
    d_vocab = int(a.info.get("d_vocab", 0)) or int(a.top_ids.max()) + 1
    index_dtype = np.uint16 if d_vocab <= np.iinfo(np.uint16).max else np.int32
    arrays: dict[str, np.ndarray] = {
        "token_ids": a.token_ids.astype(index_dtype),
        "top1_id": a.top_ids[..., 0].astype(index_dtype),
        "top1_prob": a.top_probs[..., 0].astype(np.float16),
        "proj_pct": a.projection_pct.astype(np.float16),
        "proj_grid": np.clip(np.rint(grid * GRID_SCALE), 0, 255).astype(np.uint8),
        "proj_final": a.projection_final_pct.astype(np.float16),
        "resid_norm": _f16(a.resid_norm),
        "attn_norm": _f16(a.attn_norm),
        "mlp_norm": _f16(a.mlp_norm),
    }
    logit_diff = None
    if a.targets:
        arrays["target_rank"] = a.target_ranks.astype(index_dtype)
        arrays["target_prob"] = a.target_probs.astype(np.float16)
        if len(a.targets) >= 2:
            logit_diff = {"answer": a.targets[0], "counterfactual": a.targets[1]}
            arrays["logit_diff"] = _f16(a.logit_diff(a.targets[0], a.targets[1]))
    ids_with_text = [a.token_ids, a.top_ids[..., 0].reshape(-1)]
    if full:
        arrays["top_ids"] = a.top_ids.astype(index_dtype)
        arrays["top_probs"] = a.top_probs.astype(np.float16)
        ids_with_text.append(a.top_ids.reshape(-1))
    index, blob = pack_arrays(arrays)
    wanted = np.unique(np.concatenate(ids_with_text))
    meta = {
        "version": PROTOCOL_VERSION,
        "seq": int(seq),
        "client_seq": int(client_seq),
        "model_name": a.model_name,
        "is_demo": bool(is_demo),
        "prompt": a.prompt if a.prompt is not None else "".join(a.tokens),
        "n_layers": L,
        "n_rows": R,
        "n_tokens": T,
        "top_k": a.top_k,
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
        "strings": {str(int(i)): a.strings[int(i)] for i in wanted},
        "arrays": index,
    }
    return meta, blob


def cell_details(analysis: Analysis, pos: int) -> dict[str, Any]:
    """The full top-k of every row at one position (the hover tooltip's lazy request)."""
    if not 0 <= pos < analysis.n_tokens:
        raise IndexError(f"position {pos} is outside the prompt (0..{analysis.n_tokens - 1})")
    ids = analysis.top_ids[:, pos]
    return {
        "pos": int(pos),
        "top_ids": ids.astype(int).tolist(),
        "top_probs": [[float(p) for p in row] for row in analysis.top_probs[:, pos]],
        "strings": {str(int(i)): analysis.strings[int(i)] for i in np.unique(ids)},
    }


def decode_payload(meta: dict[str, Any], blob: bytes) -> dict[str, np.ndarray]:
    """Arrays of a payload, with proj_grid turned back into percentages."""
    arrays = unpack_arrays(meta["arrays"], blob)
    arrays["proj_grid_pct"] = arrays["proj_grid"].astype(np.float32) / GRID_SCALE
    return arrays


def _f16(x: np.ndarray) -> np.ndarray:
    """float16 without overflow to inf (norms of large models can exceed 65504)."""
    return np.clip(x, -65504, 65504).astype(np.float16)
