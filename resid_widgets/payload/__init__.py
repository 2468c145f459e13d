"""Payload encoding: analysis arrays -> one compact binary blob + a small JSON header.

Step 3 of the flow (session -> analyses -> **payload** -> widgets -> js). The widget ships a
``(meta, blob)`` pair; the browser decodes it with ``js/src/codecs.ts``. Layout:

* ``blob``: the raw bytes of each array, C order, little endian, each starting at an offset that
  is a multiple of 8;
* ``meta["arrays"][name] = {"offset": int, "dtype": str, "shape": [int, ...]}`` with dtype one
  of ``float16 float32 int32 uint16 uint8``.

Everything else in ``meta`` is plain JSON (labels, token strings, settings); see js/README.md.
"""

from resid_widgets.payload.codec import DTYPES, pack_arrays, unpack_arrays
from resid_widgets.payload.encode import cell_details, decode_payload, encode_analysis
from resid_widgets.payload.protocol import GRID_SCALE, METRICS, PROTOCOL_VERSION, TAU_GRID

__all__ = [
    "DTYPES",
    "GRID_SCALE",
    "METRICS",
    "PROTOCOL_VERSION",
    "TAU_GRID",
    "cell_details",
    "decode_payload",
    "encode_analysis",
    "pack_arrays",
    "unpack_arrays",
]
