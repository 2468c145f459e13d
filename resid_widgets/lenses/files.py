"""Checking a lens file against the model *before* anything is allocated (issue 20, item 2).

A lens file is data from elsewhere: its header can claim any width, row count or shape. Everything
the header says is checked first (the safetensors header holds every tensor's dtype and shape, read
without loading a byte of the tensors; a ``.pt`` file's size is compared with what the model's width
and depth allow), so a 65 KB file saying ``d_model = "30000"`` is refused with one line instead of
allocating 3.6 GB, and no tensor is ever broadcast: every shape must be exactly ``[d, d]`` or ``[d]``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: dtypes a lens tensor may be stored in (safetensors names -> bytes per element)
FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
#: the largest width / row count a lens file may claim when no model is given to check it against
MAX_D_MODEL = 65_536
MAX_ROWS = 1_024
_KEY = re.compile(r"([Dc])\.(\d{1,5})")
_INT = re.compile(r"[1-9]\d{0,6}")


def model_shape(session_or_model: Any) -> tuple[int, int] | None:
    """``(n_layers, d_model)`` of a session or model, or None."""
    if session_or_model is None:
        return None
    from resid_widgets.lenses.base import model_of

    model = model_of(session_or_model)
    return int(model.cfg.n_layers), int(model.W_U.shape[0])


def header_int(meta: dict[str, str], key: str, path: Path, limit: int) -> int:
    value = meta.get(key)
    if not isinstance(value, str) or not _INT.fullmatch(value) or int(value) > limit:
        raise ValueError(f"{path}: the header's {key} is {value!r}, not a whole number in 1..{limit}")
    return int(value)


def read_safetensors_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[str, tuple[int, ...]]]]:
    """The string metadata and ``name -> (dtype, shape)`` of a safetensors file, no tensor loaded."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            entries = {}
            for k in f.keys():
                sl = f.get_slice(k)
                entries[k] = (str(sl.get_dtype()), tuple(int(n) for n in sl.get_shape()))
    except Exception as exc:  # not a safetensors file, or a corrupt header
        raise ValueError(f"{path} is not a resid_widgets lens file (.safetensors): {_short(exc)}") from exc
    return meta, entries


def check_lens_header(path: Path, meta: dict[str, str], entries: dict, *, wanted_kind: str | None,
                      session_or_model: Any) -> tuple[str, int, int, bool, dict]:
    """Validate a resid_widgets lens file's header: ``(kind, n_rows, d_model, centre_input, info)``.

    Raises ValueError naming the first problem; nothing has been allocated when it does.
    """
    from resid_widgets.lenses.base import FORMAT

    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a resid_widgets lens file (format {meta.get('format')!r}, expected {FORMAT!r})")
    kind = meta.get("kind")
    if kind not in ("jacobian", "tuned"):
        raise ValueError(f"{path}: unknown lens kind {kind!r} (expected 'jacobian' or 'tuned')")
    if wanted_kind is not None and kind != wanted_kind:
        raise ValueError(f"{path} holds a {kind} lens, not a {wanted_kind} lens")
    shape = model_shape(session_or_model)
    n_rows = header_int(meta, "n_rows", path, MAX_ROWS if shape is None else 10**7)
    d = header_int(meta, "d_model", path, MAX_D_MODEL if shape is None else 10**7)
    if shape is not None and (n_rows, d) != (shape[0] + 1, shape[1]):
        info = _json_dict(meta.get("info", "{}"), path)
        raise ValueError(
            f"this {kind} lens was made for {info.get('model_name', 'another model')!r} ({n_rows - 1} layers, d_model {d}); "
            f"the model has {shape[0]} layers and d_model {shape[1]}. Fit one for this model."
        )
    if meta.get("centre_input", "0") not in ("0", "1"):
        raise ValueError(f"{path}: centre_input is {meta.get('centre_input')!r}, expected '0' or '1'")
    for name, (dtype, dims) in entries.items():
        m = _KEY.fullmatch(name)
        if m is None:
            raise ValueError(f"{path}: unexpected tensor {name!r} (a lens file holds only D.<row> and c.<row>)")
        row = int(m.group(2))
        if row > n_rows - 2:
            raise ValueError(f"{path}: tensor {name!r} is for row {row}, but only rows 0..{n_rows - 2} can have one "
                             f"(row {n_rows - 1} is the model's own output)")
        want = (d, d) if m.group(1) == "D" else (d,)
        if dims != want:
            raise ValueError(f"{path}: tensor {name!r} has shape {list(dims)}, expected {list(want)} (no broadcasting)")
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} is {dtype}, expected one of {', '.join(FLOAT_DTYPES)}")
    return kind, n_rows, d, meta.get("centre_input") == "1", _json_dict(meta.get("info", "{}"), path)


def check_file_size(path: Path, most: int, what: str) -> None:
    """Refuse a file larger than the model allows (before reading it)."""
    size = path.stat().st_size
    if size > most:
        raise ValueError(f"{path} is {size:,} bytes, more than a {what} for this model can be ({most:,} bytes)")


def _json_dict(text: str, path: Path) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: the header's info is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the header's info is not a JSON object")
    return value


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
