"""Pack named numpy arrays into one aligned little-endian blob, and back."""

from __future__ import annotations

from typing import Mapping

import numpy as np

#: dtypes the browser decoder understands (js/src/codecs.ts).
DTYPES = ("float16", "float32", "int32", "uint16", "uint8")
_ALIGN = 8


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[dict, bytes]:
    """Return ``(index, blob)``: ``index[name] = {"offset", "dtype", "shape"}``."""
    index: dict[str, dict] = {}
    parts: list[bytes] = []
    offset = 0
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        dtype = arr.dtype.name
        if dtype not in DTYPES:
            raise TypeError(f"payload array {name!r} has dtype {dtype}; convert it to one of {DTYPES}")
        raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        pad = (-offset) % _ALIGN
        if pad:
            parts.append(b"\0" * pad)
            offset += pad
        index[name] = {"offset": offset, "dtype": dtype, "shape": list(arr.shape)}
        parts.append(raw)
        offset += len(raw)
    return index, b"".join(parts)


def unpack_arrays(index: Mapping[str, Mapping], blob: bytes | memoryview) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_arrays` (copies, so the result owns its memory)."""
    buf = memoryview(blob)
    out = {}
    for name, spec in index.items():
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        count = int(np.prod(spec["shape"], dtype=np.int64))
        arr = np.frombuffer(buf, dtype=dtype, count=count, offset=int(spec["offset"]))
        out[name] = arr.reshape(spec["shape"]).astype(dtype.newbyteorder("="), copy=True)
    return out
