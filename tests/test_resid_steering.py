"""ResidWidget's steering panel (Python side): the ``steer`` trait, the after payload, direction sources, bad input.

Oracles: ``Session.analyze(prompt, intervention=Steer(...))`` on a fresh run (bit for bit), the plain analysis
(bit for bit), TransformerLens's own cache (``hook_z @ W_O``, ``hook_mlp_out``) for the writer direction.
Also: SteeringWidget's colour scale (rows the steering cannot reach keep their colours as α moves) and
TaskVectorExplorer's cell numbers letting the pointer through to the cell.
"""

from __future__ import annotations

import base64
import json
import re
import threading

import numpy as np
import pytest
import torch

from resid_widgets import ResidWidget
from resid_widgets.analyses import pipeline
from resid_widgets.interventions import Steer, unembed_direction, writer_direction
from resid_widgets.payload.codec import unpack_arrays
from resid_widgets.payload.contract import ContractError
from resid_widgets.payload.encode import decode_payload, encode_analysis
from test_payload import merge
from widget_messages import send_collect

PROMPT = "Mr. Darcy said to Elizabeth that she"
FIELDS = ["top_ids", "top_probs", "target_ranks", "entropy", "kl_to_output", "projection_pct", "resid_norm", "attn_norm",
          "mlp_norm", "_resid"]
SPEC = {"on": True, "source": "unembed", "token": " Bennet", "layers": [1], "alpha": 8.0}


def assert_bit_equal(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def fresh(s, prompt=PROMPT, **kw):
    s._last = None  # no earlier run to reuse: the full forward pass
    return s.analyze(prompt, **kw)


@pytest.fixture()
def w(demo_session):
    demo_session._last = None  # the plain analysis by a full pass (not an earlier test's prefix, equal only to ~1e-7)
    widget = ResidWidget(demo_session, PROMPT, targets=[" Bennet"])
    yield widget
    widget.close()


def test_steered_payload_is_session_analyze_bit_for_bit(w, demo_session):
    s = demo_session
    w.steer = SPEC
    v = unembed_direction(s, " Bennet")
    ref = fresh(s, targets=[" Bennet"], intervention=Steer(v, [1], 8.0))
    assert_bit_equal(w.steered, ref)
    _, blob = encode_analysis(ref)
    assert w._steer_payload == blob and w._steer_meta["pair_seq"] == w._meta["seq"]
    assert len(w._steer_payload) == len(w._payload)  # the wire: twice the plain payload while steering is on
    # rows before the steered layer's output (rows 0, 1) are the plain ones; row 2 (after layer 1) moved
    np.testing.assert_array_equal(w.steered._resid[:2], w.analysis._resid[:2])
    assert not np.array_equal(w.steered._resid[2], w.analysis._resid[2])
    assert (w.steered.target_ranks[2:, -1, 0] <= w.analysis.target_ranks[2:, -1, 0]).all()
    # norm-matched, from a position on (the session reuses the plain run's prefix): equal to a fresh run to 1e-6
    spec = {**SPEC, "norm_match": True, "alpha": 0.5, "positions": "from", "position": 3}
    w.steer = spec
    ref = fresh(s, targets=[" Bennet"], intervention=Steer(v, [1], 0.5, positions=list(range(3, w.analysis.n_tokens)), norm_match=True))
    np.testing.assert_allclose(w.steered._resid, ref._resid, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(w.steered._resid[:, :3], w.analysis._resid[:, :3])  # positions before 3 untouched
    info = w._steer_info["direction"]
    assert info["formula"] == "h ← h + α·median‖h‖·v/‖v‖" and info["positions"] == list(range(3, w.analysis.n_tokens))
    np.testing.assert_array_equal(np.asarray(info["vector"], np.float32), v.vector.numpy())


def test_alpha_zero_and_off_equal_the_plain_analysis_bit_for_bit(w, demo_session):
    plain_before = fresh(demo_session, targets=[" Bennet"])
    payload = w._payload
    w.steer = {**SPEC, "alpha": 0.0}
    assert_bit_equal(w.steered, w.analysis)
    assert w._steer_payload == w._payload == payload
    w.steer = SPEC
    assert w._steer_payload != w._payload
    w.steer = {**SPEC, "on": False}
    assert w.steered is None and w._steer_payload == b"" and w._steer_meta == {} and w._payload == payload
    assert_bit_equal(fresh(demo_session, targets=[" Bennet"]), plain_before)  # no hook or state left behind
    # a plain analysis right after a steered run (reusing that run where it may) is bit-equal too
    w.steer = {**SPEC, "alpha": 7.0}  # not cached: the session runs it
    assert_bit_equal(demo_session.analyze(PROMPT, targets=[" Bennet"]), plain_before)


def test_browser_edit_path_and_continuation(w):
    acks = send_collect(w, {"type": "edit", "view": "v", "seq": 3, "changes": {"steer": {**SPEC, "n_continue": 4}}})
    assert [a.get("error") for a in acks if a["type"] == "edit_done"] == [None]
    assert w.steer["alpha"] == 8.0 and w.steered is not None and w._meta["client_seq"] == 3
    c = w._steer_info["continuation"]
    assert c["n"] == 4 and isinstance(c["before"], str) and isinstance(c["after"], str)
    s = w.session
    assert c["before"] == s.continue_text(PROMPT, 4).text
    assert c["after"] == s.continue_text(PROMPT, 4, intervention=Steer(unembed_direction(s, " Bennet"), [1], 8.0)).text
    # α moves from the browser: a new after payload, the plain one is the cached one (same object)
    plain = w.analysis
    send_collect(w, {"type": "edit", "view": "v", "seq": 4, "changes": {"steer": {**SPEC, "alpha": 2.0}}})
    assert w.analysis is plain and w._steer_meta["steer"]["alpha"] == 2.0


def test_writer_direction_against_transformer_lens_cache(demo_session):
    s = demo_session
    model = s.model
    ids = torch.as_tensor(s.to_token_ids(PROMPT)[0])[None]
    with torch.inference_mode():
        _, cache = model.run_with_cache(ids)
    z = cache["blocks.1.attn.hook_z"][0, :, 2].double()  # [T, d_head]
    head = z @ model.W_O[1, 2].detach().double()  # [T, d_model]
    v = writer_direction(s, PROMPT, "L1H2")
    np.testing.assert_allclose(v.vector.numpy(), head.mean(0).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(writer_direction(s, PROMPT, "L1H2", 3).vector.numpy(), head[3].numpy(), rtol=1e-5, atol=1e-5)
    mlp = cache["blocks.0.hook_mlp_out"][0].double()
    np.testing.assert_allclose(writer_direction(s, PROMPT, "0_mlp_out").vector.numpy(), mlp.mean(0).numpy(), rtol=1e-5, atol=1e-5)
    assert v.source == "writer" and v.layer == 1
    with pytest.raises(ValueError, match="L0H1"):
        writer_direction(s, PROMPT, "head 3")
    with pytest.raises(ValueError, match="no writer 'L1H99'"):
        writer_direction(s, PROMPT, "L1H99")


def test_widget_writer_and_named_sources(w, demo_session):
    w.steer = {**SPEC, "source": "writer", "writer": "L0H1", "writer_pos": -1, "alpha": 3.0}
    ref = writer_direction(demo_session, PROMPT, "L0H1")
    np.testing.assert_array_equal(np.asarray(w._steer_info["direction"]["vector"], np.float32), ref.vector.numpy())
    v = torch.randn(demo_session.d_model, generator=torch.Generator().manual_seed(0))
    w.add_direction("france", v)
    assert w._steer_info["directions"] == ["france"]
    w.steer = {**SPEC, "source": "named", "name": "france", "alpha": 1.5}
    ref = fresh(demo_session, targets=[" Bennet"], intervention=Steer(v, [1], 1.5))
    assert_bit_equal(w.steered, ref)
    w.add_direction("france", 2 * v)  # re-registered while in use: recomputed
    assert_bit_equal(w.steered, fresh(demo_session, targets=[" Bennet"], intervention=Steer(2 * v, [1], 1.5)))


BAD = [
    ({**SPEC, "layers": [99]}, "layer 99 is out of range: the model has 4 layers"),
    ({**SPEC, "alpha": float("nan")}, "steer.alpha must be a finite number"),
    ({**SPEC, "alpha": None}, "steer.alpha must be a finite number"),  # what JSON makes of NaN / Infinity
    ({**SPEC, "source": "named", "name": "nope"}, "unknown direction 'nope'"),
    ({**SPEC, "token": "zzzqqq"}, "the steering token must be a single token"),
    ({**SPEC, "positions": "at", "position": 50}, "steer.position 50 is out of range for a prompt of"),
    ({**SPEC, "source": "jacobian"}, "needs the widget's lens to be the Jacobian lens"),
    ({**SPEC, "colour": 1}, "steer has unknown fields 'colour'"),
    ("on", "steer must be an object"),
]


@pytest.mark.parametrize("spec, message", BAD, ids=range(len(BAD)))
def test_bad_steering_input_on_both_paths(w, spec, message):
    w.steer = SPEC
    analysis, meta, after_meta, steer = w.analysis, w._meta, w._steer_meta, dict(w.steer)
    with pytest.raises(ContractError, match=re.escape(message)):
        w.steer = spec
    assert message in w.error and w.status == "idle"
    assert w.analysis is analysis and w._meta is meta and w._steer_meta is after_meta and w.steer == steer
    w.layer = 0  # a good value clears a trait error
    acks = send_collect(w, {"type": "edit", "view": "v", "seq": 9, "changes": {"steer": spec}})
    assert [a["seq"] for a in acks if a["type"] == "edit_done"] == [9] and message in acks[-1]["error"]
    assert message in w.error and w.status == "idle", w.error
    assert w.analysis is analysis and w._meta is meta and w._steer_meta is after_meta and w.steer == steer


@pytest.mark.parametrize("vector, message", [
    (torch.ones(7), "has width 7, but the model's residual stream has d_model"),
    (torch.tensor([1.0, float("nan")] + [0.0] * 62), "non-finite values (NaN or inf)"),
], ids=["width", "nan"])
def test_bad_named_direction(w, vector, message):
    meta = w._meta
    vector = vector if vector.numel() != 64 else torch.cat([vector, torch.zeros(w.session.d_model - 64)])
    with pytest.raises(ValueError, match=re.escape(message)):
        w.add_direction("bad", vector)
    # (the browser names a registered direction, so a vector never comes from it: this is the one way in)
    assert "bad" not in w._steer_info.get("directions", []) and w._meta is meta and message in w.error


def test_export_carries_before_after_and_the_direction(w, tmp_path):
    w.steer = {**SPEC, "n_continue": 3}
    html = w.save_html(tmp_path / "steer.html").read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="rw-state">(.*?)</script>', html, re.S)
    state = json.loads(m.group(1))
    # the after payload as shown, plus the full top-k of the steered run (the offline tooltip's list)
    arrays = decode_payload(state["_steer_meta"], base64.b64decode(state["_steer_payload_b64"]))
    shown = decode_payload(w._steer_meta, w._steer_payload)
    assert all(np.array_equal(arrays[k], v, equal_nan=True) for k, v in shown.items()) and "top_ids" not in shown
    np.testing.assert_array_equal(arrays["top_ids"], w.steered.top_ids)
    np.testing.assert_array_equal(arrays["top_probs"], w.steered.top_probs.astype(arrays["top_probs"].dtype))
    assert state["_steer_meta"]["after_seq"] == w._steer_meta["after_seq"]
    assert state["_steer_meta"]["pair_seq"] == json.loads(re.search(r'id="rw-meta">(.*?)</script>', html, re.S).group(1))["seq"]
    d = state["_steer_info"]["direction"]
    assert d["source"] == "unembed" and d["layers"] == [1] and d["alpha"] == 8.0 and d["norm_match"] is False
    assert d["positions"] is None and len(d["vector"]) == w.session.d_model and state["steer"]["token"] == " Bennet"


# ---- SteeringWidget's colour scale and TaskVectorExplorer's labels ------------------------------------
def test_steering_widget_rows_before_the_steered_layer_keep_their_colours(demo_session):
    from resid_widgets.widgets.steering import SteeringWidget

    sw = SteeringWidget(demo_session, PROMPT, " Bennet", layers=(2,), alpha=0.5, n_new=0)
    sw.view.value = "after"
    seen = []
    for alpha in (0.5, 3.0):
        sw.alpha.value = alpha
        sc = sw.color_scale
        seen.append((sc.min, sc.max, np.array(sw.heat.color)[:3].copy(), np.array(sw.heat.color)[3:].copy()))
    (lo1, hi1, early1, late1), (lo2, hi2, early2, late2) = seen
    assert (lo1, hi1) == (lo2, hi2)  # the scale does not move with α ...
    np.testing.assert_array_equal(early1, early2)  # ... nor the values of rows 0..2 (before layer 2's output)
    assert not np.array_equal(late1, late2)  # while the steered rows do change (the check can fail)
    assert sw.data()["before"].min() == lo1 and sw.data()["before"].max() == hi1


def test_task_vector_numbers_let_the_pointer_through(demo_session):
    from resid_widgets.widgets.task_vectors import CLASS, TaskVectorExplorer

    tv = TaskVectorExplorer(demo_session, ["Mr. and Mrs.", "Miss Elizabeth", "Mr. Darcy"], ["a", "b", "a"])
    styles = [c.value for c in tv.children if getattr(c, "value", None) and "<style>" in str(c.value)]
    assert CLASS in tv._dom_classes and any(f".{CLASS} text.label" in s and "pointer-events: none" in s for s in styles)


def test_jacobian_source_with_the_jacobian_lens(demo_session):
    from resid_widgets.interventions import jacobian_direction

    w = ResidWidget(demo_session, PROMPT, lens="jacobian")
    try:
        w.steer = {**SPEC, "source": "jacobian", "layers": [2, 1], "alpha": 2.0}
        ref = jacobian_direction(demo_session, " Bennet", 1)  # at the first steered layer
        d = w._steer_info["direction"]
        assert d["source"] == "jacobian" and sorted(d["layers"]) == [1, 2]
        np.testing.assert_array_equal(np.asarray(d["vector"], np.float32), ref.vector.numpy())
        assert w.steered.lens == "jacobian"
    finally:
        w.close()


def test_steer_given_to_the_constructor_is_computed(demo_session):
    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet"], steer=SPEC)
    try:
        assert w.steer["alpha"] == 8.0 and w.steered is not None and w._steer_meta["pair_seq"] == w._meta["seq"]
    finally:
        w.close()


def test_after_details_are_the_steered_analysis_top_k(w):
    """``details`` with ``run: "after"``: the full top-k of the steered run at the cell (the tooltip in after /
    difference mode), equal to ``w.steered``'s; the plain request still answers from the plain run."""
    w.steer = {**SPEC, "alpha": 20.0}
    after, plain, seq = w.steered, w.analysis, w._meta["seq"]
    T = after.n_tokens
    assert w._steer_meta["after_seq"] >= 1
    reply = send_collect(w, {"type": "details", "req": "v:1", "seq": seq, "pos": T - 1, "run": "after",
                      "after_seq": w._steer_meta["after_seq"]})[-1]
    assert reply["run"] == "after" and reply["seq"] == seq and reply["after_seq"] == w._steer_meta["after_seq"]
    np.testing.assert_array_equal(np.asarray(reply["top_ids"]), after.top_ids[:, T - 1])
    np.testing.assert_allclose(np.asarray(reply["top_probs"], np.float32), after.top_probs[:, T - 1], rtol=0, atol=0)
    assert all(reply["strings"][str(int(i))] == after.strings[int(i)] for i in after.top_ids[:, T - 1].ravel())
    # steering changed the prediction at the last position from the steered layer's output on
    assert not np.array_equal(after.top_ids[2:, T - 1], plain.top_ids[2:, T - 1])
    plain_reply = send_collect(w, {"type": "details", "req": "v:2", "seq": seq, "pos": T - 1})[-1]
    np.testing.assert_array_equal(np.asarray(plain_reply["top_ids"]), plain.top_ids[:, T - 1])
    assert "run" not in plain_reply
    # an after payload no longer shown, a bad run, steering off: clear error replies, nothing changes
    stale = send_collect(w, {"type": "details", "req": "v:3", "seq": seq, "pos": 0, "run": "after", "after_seq": 10**6})[-1]
    assert "is no longer shown" in stale["error"] and stale["req"] == "v:3"
    bad = send_collect(w, {"type": "details", "req": "v:4", "seq": seq, "pos": 0, "run": "steered"})[-1]
    assert bad["error"] == "the details request's run must be plain or after, got 'steered'"
    w.steer = {**SPEC, "on": False}
    off = send_collect(w, {"type": "details", "req": "v:5", "seq": w._meta["seq"], "pos": 0, "run": "after"})[-1]
    assert "steering is off" in off["error"] and w.error == ""


def test_after_progress_is_shown_while_it_computes(w):
    """The after run reports ``_steer_info.computing`` / ``progress`` while it runs; the publish clears them."""
    seen = []
    w.observe(lambda ch: seen.append(dict(ch["new"])), names="_steer_info")
    w.steer = {**SPEC, "alpha": 3.0}
    computing = [i for i in seen if i.get("computing")]
    assert computing and computing[0]["progress"] == 0.0 and computing[-1]["progress"] > 0.5
    fractions = [i["progress"] for i in computing]
    assert fractions == sorted(fractions)
    assert "computing" not in w._steer_info and "progress" not in w._steer_info and w._steer_info["direction"]["alpha"] == 3.0
    # a failing after run (a token that is not one) clears them too
    with pytest.raises(ContractError):
        w.steer = {**SPEC, "alpha": 4.0, "layers": [99]}
    assert "computing" not in w._steer_info


@pytest.fixture()
def recorded(w, monkeypatch):
    """``w`` with its sent messages recorded (and still sent) and lens blocks of 2 positions."""
    monkeypatch.setattr(w.session, "chunk_elements", 2 * 4 * w.session.d_vocab)
    sent = []
    real = w.send
    monkeypatch.setattr(w, "send", lambda content, buffers=None: sent.append((content, buffers)) or real(content, buffers=buffers))
    return w, sent


def _after_deltas(sent):
    return [(c, bytes(b[0])) for c, b in sent if c.get("type") == "delta" and c.get("run") == "after"]


def test_after_run_streams_deltas_that_merge_into_the_after_payload(recorded):
    """The after run streams like the lens (delta messages with run "after", numbered by after_seq); merged, they
    equal the final after payload; moving α from a position on sends only the positions from there."""
    w, sent = recorded
    shown = w._meta["seq"]
    w.steer = {**SPEC, "positions": "from", "position": 3}
    first = _after_deltas(sent)
    stages = [c["stage"] for c, _ in first]
    assert stages[0] == "begin" and stages[-1] == "done" and stages.count("lens") >= 2
    # paired with the plain payload the views show while it streams (the final after payload pairs with the final one)
    assert all(c["seq"] == w._steer_meta["after_seq"] and c["pair_seq"] == shown for c, _ in first)
    assert first[0][0]["meta"]["after_seq"] == w._steer_meta["after_seq"] and first[0][0]["keep"] == 0
    want = unpack_arrays(w._steer_meta["arrays"], w._steer_payload)
    got = merge(first, None)
    assert set(want) == set(got) and all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)
    # α moves (browser edit): the session reuses the prefix before position 3, so positions 0..2 are not sent again
    base_meta, base_blob = w._steer_meta, w._steer_payload
    sent.clear()
    w._on_frontend_msg(w, {"type": "edit", "view": "v", "seq": 2, "changes": {"steer": {**SPEC, "positions": "from", "position": 3, "alpha": 2.0}}}, [])
    w.wait()
    second = _after_deltas(sent)
    begin = second[0][0]
    assert begin["base_seq"] == base_meta["after_seq"] and begin["keep"] == 3 and begin["positions"] == [3, w.analysis.n_tokens]
    assert begin["seq"] == w._steer_meta["after_seq"] > base_meta["after_seq"]
    got = merge(second, unpack_arrays(base_meta["arrays"], base_blob))
    want = unpack_arrays(w._steer_meta["arrays"], w._steer_payload)
    assert all(np.array_equal(got[k], want[k], equal_nan=True) for k in want)
    # α keeps moving: the plain analysis stays cached (steering results have their own cache), every move keeps 0..2
    plain = w.analysis
    for alpha in (3.0, 4.0, 5.0, 6.0):
        sent.clear()
        w.steer = {**SPEC, "positions": "from", "position": 3, "alpha": alpha}
        begins = [c for c, _ in _after_deltas(sent) if c["stage"] == "begin"]
        assert w.analysis is plain and [b["keep"] for b in begins] == [3], alpha
        assert not [c for c, _ in sent if c.get("type") == "delta" and c.get("run") is None]  # no plain stream


def test_newer_edit_cancels_the_after_run_between_blocks(recorded, monkeypatch):
    w, sent = recorded
    w.steer = SPEC
    gate, entered = threading.Event(), threading.Event()
    real_read = pipeline.read_block

    def slow_read(*a, **k):  # hold the first after run inside its first lens block until the second edit arrives
        if not gate.is_set():
            entered.set()
            gate.wait(10)
        return real_read(*a, **k)

    sent.clear()
    monkeypatch.setattr(pipeline, "read_block", slow_read)
    w._on_frontend_msg(w, {"type": "edit", "view": "v", "seq": 1, "changes": {"steer": {**SPEC, "alpha": 3.0}}}, [])
    assert entered.wait(10)
    w._on_frontend_msg(w, {"type": "edit", "view": "v", "seq": 2, "changes": {"steer": {**SPEC, "alpha": 5.0}}}, [])
    gate.set()
    w.wait()
    deltas = _after_deltas(sent)
    first_seq = deltas[0][0]["seq"]
    first = [c["stage"] for c, _ in deltas if c["seq"] == first_seq]
    assert "done" not in first and first.count("lens") <= 1  # stopped at the next block boundary
    assert w.steer["alpha"] == 5.0 and w._steer_meta["steer"]["alpha"] == 5.0 and w._steer_meta["after_seq"] != first_seq
    assert "computing" not in w._steer_info and w.status == "idle"
    assert_bit_equal(w.steered, fresh(w.session, targets=[" Bennet"], intervention=Steer(unembed_direction(w.session, " Bennet"), [1], 5.0)))
