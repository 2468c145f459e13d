"""ResidWidget streams each stage to the browser as a binary delta; the merged deltas equal the final
payload; a newer edit cancels the running one between blocks; wait=False shows the first stage at once."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from resid_widgets import ResidWidget, Session
from resid_widgets.analyses import pipeline
from resid_widgets.payload.codec import unpack_arrays
from test_payload import merge

LONG = "This is a sentence. This is another sentence. Step 1: add. Step 2: subtract. " * 3


def _edit(widget, view, seq, window=None, **changes):
    msg = {"type": "edit", "view": view, "seq": seq, "changes": changes}
    if window is not None:
        msg["window"] = list(window)
    widget._on_frontend_msg(widget, msg, [])


@pytest.fixture()
def recorded(tiny_session, monkeypatch):
    """A widget whose sent messages are recorded (and still sent), with small lens blocks."""
    session = Session(tiny_session.model)
    session.chunk_elements = 2 * 2 * session.d_vocab  # 2 positions per lens block (2 rows besides the last)
    w = ResidWidget(session, "This is a sentence.", targets=[" It", " This"], top_k=5)
    sent = []
    real = w.send
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append((content, buffers)) or real(content, buffers=buffers))
    yield w, sent
    w.close()


def test_edit_streams_deltas_that_merge_into_the_final_payload(recorded):
    w, sent = recorded
    before_meta, before_blob = w._meta, w._payload
    base_arrays = unpack_arrays(before_meta["arrays"], before_blob)
    _edit(w, "v", 1, window=(6, 9), prompt="This is a sentence. This is another one.")
    w.wait()
    deltas = [(c, b[0]) for c, b in sent if c.get("type") == "delta"]
    stages = [c["stage"] for c, _ in deltas]
    assert stages[0] == "begin" and stages[-1] == "done"
    new = w.analysis.n_tokens - deltas[0][0]["keep"]
    assert stages.count("lens") >= (new + 1) // 2  # blocks of at most 2 positions
    begin = deltas[0][0]
    assert begin["base_seq"] == before_meta["seq"] and begin["keep"] > 0  # only the new positions travel
    assert begin["positions"] == [begin["keep"], w.analysis.n_tokens]
    assert deltas[1][0]["positions"][0] == 6  # the positions in view are read first
    assert all(c["seq"] == w._meta["seq"] for c, _ in deltas)  # the final payload keeps the stream's seq
    got = merge([(c, bytes(b)) for c, b in deltas], base_arrays)
    want = unpack_arrays(w._meta["arrays"], w._payload)
    for name in want:
        if name in got:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert set(want) - set(got) == set()


def test_newer_edit_cancels_the_running_one_between_blocks(recorded, monkeypatch):
    w, sent = recorded
    gate, entered = threading.Event(), threading.Event()
    real_read = pipeline.read_block

    def slow_read(*a, **k):  # hold the first edit inside its first lens block until the second edit arrives
        if not gate.is_set():
            entered.set()
            gate.wait(10)
        return real_read(*a, **k)

    monkeypatch.setattr(pipeline, "read_block", slow_read)
    _edit(w, "v", 1, prompt=LONG)
    assert entered.wait(10)
    _edit(w, "v", 2, prompt="It is a truth.")
    gate.set()
    w.wait()
    first_seq = next(c["seq"] for c, _ in sent if c.get("type") == "delta" and c["stage"] == "begin")
    first = [c["stage"] for c, _ in sent if c.get("type") == "delta" and c["seq"] == first_seq]
    assert "done" not in first and first.count("lens") <= 1  # stopped at the next block boundary
    assert w.prompt == "It is a truth." and w.analysis.complete and w.status == "idle"
    acks = [c["seq"] for c, _ in sent if c.get("type") == "edit_done"]
    assert sorted(acks) == [1, 2]


def test_wait_false_shows_the_first_stage_then_completes(tiny_session, monkeypatch):
    gate = threading.Event()
    real_read = pipeline.read_block
    calls = []

    def gated(*a, **k):
        calls.append(1)
        if len(calls) > 1:  # the final row is read in begin; hold the other rows' lens
            gate.wait(10)
        return real_read(*a, **k)

    monkeypatch.setattr(pipeline, "read_block", gated)
    w = ResidWidget(Session(tiny_session.model), "Mr. and Mrs. Bennet", wait=False)
    try:
        assert w.status == "computing" and w._meta["n_tokens"] == w.analysis.n_tokens
        assert not w.analysis.complete  # returned before the lens was read
        assert np.isfinite(w.analysis.projection_pct).all() and (w.analysis.top_ids[-1, :, 0] >= 0).all()
        gate.set()
        w.wait()
        assert w.analysis.complete and w.status == "idle" and w.error == ""
        np.testing.assert_array_equal(unpack_arrays(w._meta["arrays"], w._payload)["top1_id"], w.analysis.top_ids[..., 0])
    finally:
        gate.set()
        w.close()


def test_wait_false_bad_input_raises(tiny_session):
    with pytest.raises(ValueError, match="empty"):
        ResidWidget(tiny_session, "   ", wait=False)


def test_lens_switch_is_one_edit_and_switching_back_is_instant(demo_session, monkeypatch):
    w = ResidWidget(Session(demo_session.model), "Mr. and Mrs. Bennet had five")
    try:
        logit = w.analysis
        _edit(w, "v", 1, lens="tuned")
        w.wait()
        assert w.lens == "tuned" and w.analysis.lens == "tuned" and w._meta["lens"] == "tuned"
        assert (w.analysis.kl[:-1].mean() < logit.kl[:-1].mean())  # the tuned lens reads closer
        runs = []
        real = w.session.stream
        monkeypatch.setattr(w.session, "stream", lambda *a, **k: runs.append(k.get("lens")) or real(*a, **k))
        seq = w._meta["seq"]
        w.lens = "logit"  # from Python: the cached analysis, no computation
        assert runs == [] and w.analysis is logit and w._meta["seq"] > seq and w._meta["lens"] == "logit"
        with pytest.raises(Exception):
            w.lens = "bogus"
        assert "bogus" in w.error and w.lens == "logit"
    finally:
        w.close()
