"""ResidWidget's Writers panel, Python half: the ``writers`` message through the widget's own comm handler.

Values are checked against ``AttributionRun.dla`` (exactly: the same computation) and against TransformerLens's own
``ActivationCache.get_full_resid_decomposition`` + ``apply_ln_to_stack`` at the cell's row (1e-4 relative); the
every-position view against ``run.dla`` at every position; bad messages get an error reply, the banner says it
and nothing shown changes; the bytes per cell are measured; ``save_html`` carries the cells computed.
"""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch

from resid_widgets import ResidWidget
from resid_widgets.session.attribution import AttributionRun
from resid_widgets.widgets import resid_writers

TOL = 1e-4
PROMPT = "Mr. and Mrs. Bennet"
#: the added payload per cell allowed by issue 21 (bytes)
CELL_BUDGET = 8 * 1024


class Recorder:
    """The widget's outgoing custom messages, recorded (and still sent)."""

    def __init__(self, w):
        self.w, self.sent, send = w, [], w.send

        def record(content, buffers=None):
            self.sent.append((content, list(buffers or [])))
            return send(content, buffers=buffers)

        w.send = record

    def ask(self, **fields):
        """Send one writers message through the comm handler; return (reply, float32 buffer)."""
        n = len(self.sent)
        self.w._on_frontend_msg(self.w, {"type": "writers", **fields}, [])
        self.w.writers.wait()
        replies = [(c, b) for c, b in self.sent[n:] if c.get("type") == "writers"]
        assert len(replies) == 1, replies
        content, buffers = replies[0]
        return content, (np.frombuffer(bytes(buffers[0]), "<f4") if buffers else None)


@pytest.fixture(scope="module")
def widget(demo_session):
    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    yield w
    w.close()


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1e-12, np.abs(b).max()))


def _tl_cell(session, ids, row: int, pos: int, target: int, cf: int) -> dict[str, float]:
    """TransformerLens's own attribution at (row, pos): the full decomposition at the row, through the norm that
    reads that row (``apply_ln_to_stack``), dotted with W_U[:, target] - W_U[:, cf]; by label."""
    model = session.model
    _, cache = model.run_with_cache(torch.as_tensor(ids)[None])
    stack, labels = cache.get_full_resid_decomposition(layer=row, expand_neurons=False, return_labels=True)
    scaled = cache.apply_ln_to_stack(stack, layer=row)[:, 0, pos]  # [W, d_model]
    values = scaled @ (model.W_U[:, target] - model.W_U[:, cf])
    return dict(zip(labels, values.detach().numpy().tolist()))


def test_cell_equals_attribution_run_and_transformer_lens(widget, demo_session):
    rec = Recorder(widget)
    a, seq = widget.analysis, widget._meta["seq"]
    row, pos = 3, a.n_tokens - 1
    reply, buf = rec.ask(req="v:w1", seq=seq, row=row, pos=pos, labels=True)
    assert "error" not in reply, reply
    labels, L = reply["labels"], reply["n_layers"]
    assert len(buf) == len(labels) + 2 * L  # W values, then the [L, 2] strip
    values, strip = buf[: len(labels)], buf[len(labels):].reshape(L, 2)
    tgt, cf = (int(i) for i in a.target_ids[:2])
    run = AttributionRun(demo_session, [int(i) for i in a.token_ids])
    att = run.dla(tgt, cf, row=row, positions=[pos])
    ours = {lab: float(values[labels.index(lab)]) for lab in att.labels}
    assert _rel(list(ours.values()), att.values[:, 0]) <= 1e-6  # the same computation, float32 on the wire
    assert np.allclose(strip[:row], att.layer_values[:, :, 0], rtol=1e-6, atol=1e-7)
    assert np.isnan(strip[row:]).all()  # layers at or after the row did not write yet
    later = [i for i, lab in enumerate(labels) if lab not in att.labels]
    assert later and np.isnan(values[later]).all()
    tl = _tl_cell(demo_session, a.token_ids, row, pos, tgt, cf)
    assert set(tl) == set(ours)
    err = _rel([ours[k] for k in tl], list(tl.values()))
    print(f"writers cell vs TransformerLens apply_ln_to_stack: rel err {err:.2e}")
    assert err <= TOL
    assert abs(float(np.nansum(values)) + reply["constant"] - reply["lens_value"]) <= TOL * max(1.0, abs(reply["lens_value"]))
    assert reply["direction"] == "' Bennet' − ' Darcy'" and reply["seq"] == seq


def test_one_writer_at_every_position(widget, demo_session):
    rec = Recorder(widget)
    a, seq = widget.analysis, widget._meta["seq"]
    first, _ = rec.ask(req="v:w2", seq=seq, row=4, pos=2, labels=True)
    w = first["labels"].index("L1H2")
    reply, buf = rec.ask(req="v:w3", seq=seq, row=4, pos=2, writer=w)
    assert reply["writer"] == w and len(buf) == a.n_tokens  # T float32, fetched on demand
    run = AttributionRun(demo_session, [int(i) for i in a.token_ids])
    every = run.dla(int(a.target_ids[0]), int(a.target_ids[1]), row=4)
    assert _rel(buf, every.values[every.labels.index("L1H2")]) <= 1e-6
    later = first["labels"].index("3_mlp_out")  # row 2: layer 3's MLP has not written yet
    _, buf = rec.ask(req="v:w4", seq=seq, row=2, pos=2, writer=later)
    assert np.isnan(buf).all()


def test_directions_one_target_and_none(demo_session):
    for targets, expect in (([" Bennet"], "logit of ' Bennet'"), (None, "the lens's top-1 here")):
        w = ResidWidget(demo_session, PROMPT, targets=targets)
        try:
            rec = Recorder(w)
            reply, buf = rec.ask(req="v:d", seq=w._meta["seq"], row=2, pos=3, labels=True)
            assert reply["direction"].startswith(expect), reply["direction"]
            run = AttributionRun(demo_session, [int(i) for i in w.analysis.token_ids])
            tgt = int(w.analysis.target_ids[0]) if targets else int(w.analysis.top_ids[2, 3, 0])  # the lens's own top-1
            att = run.dla(tgt, None, row=2, positions=[3])
            got = np.array([buf[reply["labels"].index(lab)] for lab in att.labels])
            assert _rel(got, att.values[:, 0]) <= 1e-6
        finally:
            w.close()


BAD = [
    ({"req": "v:b", "seq": "a", "row": 1, "pos": 1}, "seq must be a whole number"),
    ({"req": "v:b", "seq": 0, "row": 99, "pos": 1}, "row must be a residual row 0..4"),
    ({"req": "v:b", "seq": 0, "row": 1, "pos": -1}, "pos must be a position 0.."),
    ({"req": "v:b", "seq": 0, "row": 1, "pos": 1, "writer": 10**6}, "writer"),
    ({"req": "v:b", "seq": 0, "row": 1, "pos": 1, "writer": 1.5}, "writer"),
    ({"req": "v:b", "seq": 0, "row": 1, "pos": 1, "labels": "yes"}, "labels must be true or false"),
    ({"req": ["x"], "seq": 0, "row": 1, "pos": 1}, "req must be a short text id"),
    ({"req": "v:b", "seq": 0, "row": 1, "pos": 1, "evil": 1}, "unknown fields 'evil'"),
    ({"req": "v:b", "seq": 0, "row": True, "pos": 1}, "row must be a residual row"),
]


@pytest.mark.parametrize("fields,message", BAD)
def test_malformed_requests_get_a_clear_error_and_nothing_changes(widget, fields, message):
    rec = Recorder(widget)
    fields = {**fields, "seq": widget._meta["seq"] if fields["seq"] == 0 else fields["seq"]}
    if fields.get("writer") == 10**6:  # the labels must be known for the range check: ask once first
        rec.ask(req="v:first", seq=widget._meta["seq"], row=1, pos=1)
    before, payload = widget.analysis, widget._payload
    widget.error = ""
    reply, buf = rec.ask(**fields)
    assert message in reply["error"], reply
    assert message in widget.error  # the banner says it too
    assert buf is None and widget.analysis is before and widget._payload is payload and widget.status == "idle"


def test_stale_seq_and_edits(demo_session):
    """A request about a payload no longer shown is refused (the view drops it); the new analysis is answered
    once it is there; a target that is not one token fails the edit clearly and the panel keeps working."""
    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    try:
        rec = Recorder(w)
        old = w._meta["seq"]
        w._on_frontend_msg(w, {"type": "edit", "view": "v", "seq": 1, "changes": {"prompt": PROMPT + " said"}}, [])
        w.wait()
        assert w._meta["seq"] != old
        reply, _ = rec.ask(req="v:s1", seq=old, row=1, pos=1)
        assert reply["error"] == "that analysis is no longer shown" and reply["seq"] == old
        reply, buf = rec.ask(req="v:s2", seq=w._meta["seq"], row=1, pos=w.analysis.n_tokens - 1, labels=True)
        assert "error" not in reply and len(buf) == len(reply["labels"]) + 2 * reply["n_layers"]
        w._on_frontend_msg(w, {"type": "edit", "view": "v", "seq": 2, "changes": {"targets": [" Bennet Darcy"]}}, [])
        w.wait()
        assert "one token" in w.error or "single token" in w.error, w.error
        again, buf2 = rec.ask(req="v:s3", seq=w._meta["seq"], row=1, pos=w.analysis.n_tokens - 1)
        assert "error" not in again and np.array_equal(buf, buf2, equal_nan=True)
    finally:
        w.close()


def test_a_cell_asked_while_the_lens_streams_is_answered_before_the_lens_ends(demo_session, monkeypatch):
    """The panel streams like the lens: a cell the view asks about once a new analysis's first stage is shown is
    answered between two lens blocks (by the streaming thread, which holds the session lock), not after the
    whole lens has arrived; its values equal the same cell asked once the analysis is complete."""
    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    try:
        rec = Recorder(w)
        monkeypatch.setattr(demo_session, "chunk_elements", 2 * w.analysis.n_rows * demo_session.d_vocab)  # 2 positions a block
        send_delta, asked = w._send_delta, []

        def view_asks_after_first_paint(update):
            send_delta(update)
            if update.stage == "begin" and not asked:  # what the browser does once it shows the first stage
                asked.append(w._queue.seq_of(w._queue.live))
                w._on_frontend_msg(w, {"type": "writers", "req": "v:live", "seq": asked[0], "row": 2, "pos": 1, "labels": True}, [])

        monkeypatch.setattr(w, "_send_delta", view_asks_after_first_paint)
        w.set_prompt(PROMPT + " had five daughters and one of them was")
        w.writers.wait()
        kinds = [(c.get("type"), c.get("stage")) for c, _ in rec.sent]
        reply_at = next(i for i, (c, _) in enumerate(rec.sent) if c.get("req") == "v:live")
        lens_at = [i for i, k in enumerate(kinds) if k == ("delta", "lens")]
        assert len(lens_at) >= 3, kinds  # several lens blocks
        assert reply_at < lens_at[-1], kinds  # answered while the lens was still arriving
        reply, buf = rec.sent[reply_at][0], np.frombuffer(bytes(rec.sent[reply_at][1][0]), "<f4")
        assert "error" not in reply and reply["seq"] == asked[0] == w._meta["seq"]
        again, buf2 = rec.ask(req="v:after", seq=w._meta["seq"], row=2, pos=1)
        assert np.array_equal(buf, buf2, equal_nan=True)
    finally:
        w.close()


def test_bytes_per_cell(demo_session):
    """Added payload per cell: 4 (W + 2L) bytes of float32 plus a small JSON header, whatever the prompt's length
    (labels travel once per view). Recorded for the README; the bench model's figure is bench_attribution.py's."""
    sizes = {}
    for n in (8, 200):
        ids = demo_session.tokenizer.encode(" ".join(["It is a truth universally acknowledged."] * 30))[:n]
        w = ResidWidget(demo_session, demo_session.tokenizer.decode(ids))
        try:
            rec = Recorder(w)
            first, _ = rec.ask(req="v:z1", seq=w._meta["seq"], row=2, pos=1, labels=True)
            reply, buf = rec.ask(req="v:z2", seq=w._meta["seq"], row=4, pos=w.analysis.n_tokens - 1)
            W, L = len(first["labels"]), reply["n_layers"]
            assert buf.nbytes == 4 * (W + 2 * L)
            sizes[w.analysis.n_tokens] = buf.nbytes + len(json.dumps(reply))
            label_bytes = len(json.dumps(first["labels"]))
        finally:
            w.close()
    print(f"writers bytes per cell (demo model, W={W}, L={L}): {sizes}; labels once: {label_bytes} B")
    assert len(set(sizes.values())) <= 2 and max(sizes.values()) - min(sizes.values()) <= 8  # not growing with T
    assert max(sizes.values()) <= CELL_BUDGET
    W_bench, L_bench = 12 * 12 + 12 + 3, 12  # GPT-2 small: heads, MLPs, embed, pos_embed, bias
    assert 4 * (W_bench + 2 * L_bench) + 400 <= CELL_BUDGET


def test_cells_are_cached(widget):
    a = widget.analysis
    first = widget.writers.cell(a, 2, 1)
    assert widget.writers.cell(a, 2, 1) is first  # a second request is a lookup
    assert len(widget.writers._runs) == 1  # one forward pass per prompt


def test_export_carries_the_computed_cells(demo_session, tmp_path, monkeypatch):
    monkeypatch.setattr(resid_writers, "EXPORT_CELLS", 2)
    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    try:
        rec = Recorder(w)
        seq = w._meta["seq"]
        first, _ = rec.ask(req="v:e0", seq=seq, row=1, pos=0, labels=True)
        for i, (r, p) in enumerate([(2, 1), (3, 2)]):
            rec.ask(req=f"v:e{i + 1}", seq=seq, row=r, pos=p)
        one = first["labels"].index("L0H1")
        _, at_every = rec.ask(req="v:e9", seq=seq, row=3, pos=2, writer=one)
        path = w.save_html(tmp_path / "w.html")
    finally:
        w.close()
    text = path.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script type="application/json" id="rw-meta">(.*?)</script>', text, re.S).group(1))
    exported = meta["writers"]
    assert sorted(exported["cells"]) == ["2:1", "3:2"]  # the latest EXPORT_CELLS; (1, 0) dropped
    assert exported["labels"] == first["labels"]
    cell = np.frombuffer(base64.b64decode(exported["cells"]["3:2"]["values"]), "<f4")
    w2 = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    try:
        _, again = Recorder(w2).ask(req="x", seq=w2._meta["seq"], row=3, pos=2)
    finally:
        w2.close()
    assert np.array_equal(cell, again, equal_nan=True)
    every = np.frombuffer(base64.b64decode(exported["positions"][f"3:2:{one}"]), "<f4")
    assert np.array_equal(every, at_every)
