"""The streamed deltas of an analysis, merged the way the browser merges them, equal its full payload."""

from __future__ import annotations

import numpy as np

from resid_widgets import Session
from resid_widgets.payload.codec import unpack_arrays
from resid_widgets.payload.encode import encode_analysis, encode_delta
from resid_widgets.payload.protocol import POSITION_AXIS


def merge(stream, base_arrays):
    """The frontend's merge (js/src/stream.ts), in numpy: begin sets up full-size arrays (positions before
    `keep` from the base payload), every later delta writes its positions along each array's position axis."""
    arrays = None
    for content, blob in stream:
        part = unpack_arrays(content["arrays"], blob)
        p0, p1 = content["positions"]
        if content["stage"] == "begin":
            meta = content["meta"]
            T, keep = meta["n_tokens"], content["keep"]
            arrays = {}
            for name, a in part.items():
                axis = POSITION_AXIS[name]
                shape = list(a.shape)
                shape[axis] = T
                full = np.zeros(shape, a.dtype)
                index = [slice(None)] * a.ndim
                if keep:
                    index[axis] = slice(0, keep)
                    full[tuple(index)] = base_arrays[name][tuple(index)]
                index[axis] = slice(p0, p1)
                full[tuple(index)] = a
                arrays[name] = full
        else:
            for name, a in part.items():
                index = [slice(None)] * a.ndim
                index[POSITION_AXIS[name]] = slice(p0, p1)
                arrays[name][tuple(index)] = a
    return arrays


def test_merged_stream_equals_the_full_payload(tiny_session):
    s = Session(tiny_session.model)
    first = s.analyze("This is a sentence. This is another sentence.", targets=[" It", " This"])
    _, base_blob = encode_analysis(first, seq=1)
    base_arrays = unpack_arrays(encode_analysis(first, seq=1)[0]["arrays"], base_blob)
    stream, stages = [], []
    for u in s.stream("This is a sentence. This is another daughter. Step 1", targets=[" It", " This"], view=(5, 9)):
        stages.append((u.stage, u.positions, u.keep))
        stream.append(encode_delta(u, seq=2, base_seq=1))
    analysis = u.analysis
    assert stages[0][0] == "begin" and stages[0][2] > 0  # the prefix is reused
    meta, blob = encode_analysis(analysis, seq=2)
    want = unpack_arrays(meta["arrays"], blob)
    got = merge(stream, base_arrays)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_every_payload_array_has_a_position_axis(tiny_session):
    a = tiny_session.analyze("Mr. and Mrs.", targets=[" It", " This"])
    meta, _ = encode_analysis(a, full=True)
    for name, spec in meta["arrays"].items():
        assert spec["shape"][POSITION_AXIS[name]] == a.n_tokens, name
