"""Payload encoding: numpy arrays -> one compact binary blob + a small JSON header.

Step 3 of the flow (session -> analyses -> **payload** -> widgets -> js). The widget ships a
``(meta, blob)`` pair; the browser decodes it with ``js/src/codecs.ts``. Layout:

* ``blob``: the raw bytes of each array, C order, little endian, each starting at an offset that
  is a multiple of 8;
* ``meta["arrays"][name] = {"offset": int, "dtype": str, "shape": [int, ...]}`` with dtype one
  of ``float16 float32 int32 uint16 uint8``.

Everything else in ``meta`` is plain JSON (labels, token strings, settings).
"""

from resid_widgets.payload.codec import DTYPES, pack_arrays, unpack_arrays

__all__ = ["DTYPES", "pack_arrays", "unpack_arrays"]
