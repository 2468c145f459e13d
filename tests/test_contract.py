"""The widget's contract (protocol.json ``traits`` / ``messages``), checked in one place for both
ways in: the same bad value set from Python and sent by the browser gets the same clear error in the
banner, the status goes back to idle and the analysis shown is kept. Also: the EditQueue alone, a
seeded fuzz over the browser message path, the run-time metric registry, and the generated TS types.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from traitlets import TraitError

from resid_widgets import ResidWidget
from resid_widgets.payload.contract import ContractError, check, parse_edit
from resid_widgets.payload.encode import decode_payload, encode_analysis
from resid_widgets.payload.protocol import METRIC_SPECS, TRAITS, register_metric, unregister_metric
from resid_widgets.widgets.edit_queue import EditQueue
from toy_metric import TOY, TOY_ARRAY
from widget_messages import send_collect

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    ("top_k", 0), ("top_k", 101), ("top_k", "x"), ("top_k", 1.9), ("top_k", True),
    ("tau", 0), ("tau", 1.5), ("tau", "0.5"), ("tau", float("nan")),
    ("lens", "bogus"), ("metric", "nope"), ("prompt", ""), ("prompt", 5),
]


@pytest.fixture(scope="module")
def widget(demo_session):
    w = ResidWidget(demo_session, "Mr. and Mrs.")
    yield w
    w.close()


@pytest.mark.parametrize("name, value", BAD)
def test_same_clear_error_on_both_paths(widget, name, value):
    """Python: ``w.<name> = value`` raises a TraitError; browser: an edit (prompt, top-k, lens) or a
    state update (tau, metric) with the same value. Both: the contract's message in the banner,
    status idle, the analysis and payload kept."""
    with pytest.raises(ContractError) as info:
        check(name, value)
    expected = str(info.value)
    assert name in expected
    analysis, meta = widget.analysis, widget._meta
    with pytest.raises(TraitError):
        setattr(widget, name, value)
    assert widget.error == expected and widget.status == "idle"
    assert widget.analysis is analysis and widget._meta is meta
    widget.layer = 0  # a good value clears a trait error
    assert widget.error == ""
    if TRAITS[name]["from_browser"] == "edit":
        acks = send_collect(widget, {"type": "edit", "view": "v", "seq": 7, "changes": {name: value}})
        assert [a["seq"] for a in acks if a["type"] == "edit_done"] == [7]
    else:
        widget.set_state({name: value})
    assert widget.error == expected and widget.status == "idle", (widget.error, expected)
    assert widget.analysis is analysis and widget._meta is meta and getattr(widget, name) != value
    widget.layer = 0


def test_browser_cannot_set_python_only_traits(widget):
    meta, payload = widget._meta, widget._payload
    widget.set_state({"_meta": {}, "_payload": b"", "status": "computing", "layer": 99})
    assert widget._meta is meta and widget._payload == payload and widget.status == "idle"
    assert widget.layer != 99 and "_meta" in widget.error and "layer" in widget.error
    widget.set_state({"layer": 1})
    assert widget.layer == 1


MALFORMED = [
    {"type": "edit", "seq": "a", "changes": {}},
    {"type": "edit", "seq": 1, "changes": "prompt"},
    {"type": "edit", "seq": 1, "changes": {}, "window": ["a", "b"]},
    {"type": "edit", "seq": 1, "changes": {"colour": "red"}},
    {"type": "edit", "seq": 1, "changes": {}, "extra": 1},
    {"type": "edit", "seq": 1, "changes": {"targets": ["a"] * 100_000}},
    {"type": "edit", "seq": 1, "changes": {"prompt": "x" * 2_000_000}},
    {"type": "nope"},
    ["edit"],
]


@pytest.mark.parametrize("content", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_edit_messages_get_edit_done_and_a_clear_error(widget, content):
    analysis, meta = widget.analysis, widget._meta
    acks = send_collect(widget, content)
    assert widget.error and len(widget.error) < 300 and widget.status == "idle", widget.error
    assert widget.analysis is analysis and widget._meta is meta
    if isinstance(content, dict) and content.get("type") == "edit":
        assert [a["type"] for a in acks] == ["edit_done"] and acks[0]["error"] == widget.error
    widget.layer = 0


def test_edit_queue_orders_merges_and_caches():
    q = EditQueue(cache_size=2)
    base = {"prompt": "a", "targets": [], "top_k": 10, "lens": "logit"}
    t1 = q.enqueue(base, {"prompt": "ab"})
    t2 = q.enqueue(base, {"top_k": 5})
    assert t2.params == {"prompt": "ab", "targets": [], "top_k": 5, "lens": "logit"}
    assert not q.is_latest(t1.no) and q.is_latest(t2.no) and q.cancelled(t1.no)() and not q.cancelled(t2.no)()
    q.settle(t1.no)
    assert q.pending  # a stale edit finishing does not reset the requested parameters
    q.settle(t2.no)
    assert not q.pending and q.enqueue(base, {}).params == base
    with pytest.raises(ContractError, match="cannot edit 'colour'"):
        q.enqueue(base, {"colour": 1})
    for i in range(3):
        q.store(("k", i), i)
    assert q.cached(("k", 0)) is None and q.cached(("k", 2)) == 2
    a, b = object(), object()
    seq, base_seq = q.begin_stream(a, None)
    assert base_seq == 0 and q.publish_seq(a) == seq  # the streamed analysis keeps its seq
    assert q.publish_seq(b) == seq + 1 and q.seq_of(a) == seq and q.live is b
    q.shutdown()


# ---- fuzz: random JSON over the browser message path -------------------------------------------

_VALUES = [None, True, 0, 1, -1, 1.5, 1.9, 101, 5, 2**40, "", " ", "x", "Mr.", " Mrs", [], [1], ["a", "b"], {}, {"a": 1}, float("inf")]


def _fuzz_message(rng: random.Random) -> dict:
    kind = rng.choice(["edit"] * 6 + ["details", "other"])
    msg: dict = {"type": kind}
    for field in ("view", "seq", "changes", "window", "req", "pos"):
        if rng.random() < 0.6:
            msg[field] = rng.choice(_VALUES)
    if kind == "edit" and rng.random() < 0.8:  # well-formed, with random changes
        msg = {"type": "edit", "view": "fuzz", "seq": rng.randrange(1, 50)}
        if rng.random() < 0.3:
            msg["window"] = rng.choice([[0, 2], [1, 1], [2, 0], [0, -1]])
        changes = {}
        for name in rng.sample(["prompt", "targets", "top_k", "lens", "colour"], rng.randrange(0, 3)):
            pool = {
                "prompt": ["Mr. and", "It was.", "", "x" * 200_001, 3],
                "targets": [[" and"], [], ["zz qq"], ["a"] * 40, "and"],
                "top_k": [1, 7, 0, 101, 2.5, "3"],
                "lens": ["logit", "tuned", "jacobian", "nope"],
                "colour": ["red"],
            }[name]
            changes[name] = rng.choice(pool)
        msg["changes"] = changes
    if rng.random() < 0.05:
        msg["changes"] = {"targets": ["a"] * rng.choice([100, 100_000])}
    return msg


def _expect_valid(msg: dict) -> bool:
    """An independent reading of protocol.json's rules (not the contract module)."""
    if msg.get("type") != "edit":
        return False
    if set(msg) - {"type", "view", "seq", "changes", "window"}:
        return False
    view, seq, changes = msg.get("view", ""), msg.get("seq", 0), msg.get("changes", {})
    if not isinstance(view, str) or not (type(seq) is int or (type(seq) is float and seq == int(seq))):
        return False
    if "window" in msg and msg["window"] is not None:
        w = msg["window"]
        if not (isinstance(w, list) and len(w) == 2 and all(type(x) is int and x >= 0 for x in w) and w[0] <= w[1]):
            return False
    if not isinstance(changes, dict) or set(changes) - {"prompt", "targets", "top_k", "lens"}:
        return False
    p = changes.get("prompt", "Mr.")
    k = changes.get("top_k", 5)
    t = changes.get("targets", [])
    return (
        isinstance(p, str) and 0 < len(p.strip()) and len(p) <= 100_000
        and type(k) is int and 1 <= k <= 100
        and isinstance(t, (list, str)) and len(t) <= 32
        and changes.get("lens", "logit") in ("logit", "tuned", "jacobian")
    )


def test_fuzz_browser_messages(demo_session):
    """300 seeded messages (shapes, wrong types, huge sizes): every one ends with the widget idle, a
    clear error or the edit applied, and the analysis either kept or the one asked for."""
    rng = random.Random(18)
    w = ResidWidget(demo_session, "Mr. and Mrs.", top_k=5)
    counts = dict(tried=0, clear_error=0, applied=0, state_kept=0, crash=0, silently_wrong=0)
    try:
        for _ in range(300):
            msg = _fuzz_message(rng)
            w.layer = 0  # clears a previous trait error
            w.error = ""
            before, params = w.analysis, w._params()
            counts["tried"] += 1
            try:
                acks = send_collect(w, msg)
            except Exception:  # noqa: BLE001 - counted
                counts["crash"] += 1
                continue
            if w.status != "idle" or (msg.get("type") == "edit" and not any(a.get("type") == "edit_done" for a in acks)):
                counts["crash"] += 1
                continue
            if msg.get("type") == "details":  # answered to the asking view: a reply or an error reply
                replies = [a for a in acks if a.get("type") == "details"]
                if len(replies) != 1 or w.analysis is not before:
                    counts["silently_wrong"] += 1
                elif replies[0].get("error"):
                    counts["clear_error"] += 1
                    counts["state_kept"] += 1
                else:
                    counts["applied"] += 1  # a valid request answered
                continue
            if w.error:
                counts["clear_error"] += 1
                kept = w.analysis is before and w._params() == params
                counts["state_kept" if kept else "silently_wrong"] += 1
                continue
            changes = msg.get("changes") or {}
            ok = _expect_valid(msg) and all(
                getattr(w, k) == (v if k != "targets" else list(w.analysis.targets)) for k, v in changes.items() if k != "targets"
            )
            ok = ok and w.analysis.prompt == w.prompt and w.analysis.top_k == w.top_k and w.analysis.lens == w.lens
            counts["applied" if ok else "silently_wrong"] += 1
    finally:
        w.close()
    print("fuzz counts:", json.dumps(counts))
    assert counts["crash"] == 0 and counts["silently_wrong"] == 0, counts
    assert counts["clear_error"] > 100 and counts["applied"] > 10, counts


# ---- the registry: a metric added at run time ---------------------------------------------------


@pytest.fixture
def toy_metric():
    register_metric(TOY, array=TOY_ARRAY, compute=lambda a, p, ctx: a.top_probs[:, p, 0] / 2)
    yield TOY
    unregister_metric(TOY["name"])


def test_toy_metric_travels_in_payload_and_metric_values(demo_session, toy_metric):
    from resid_widgets.analyses.workflows import metric_values

    a = demo_session.analyze("Mr. and Mrs.")
    meta, blob = encode_analysis(a)
    assert [m["name"] for m in meta["extra_metrics"]] == ["toy_half_prob"] and meta["extra_arrays"][0]["name"] == "toy_half_prob"
    np.testing.assert_allclose(decode_payload(meta, blob)["toy_half_prob"], a.top_probs[..., 0] / 2, rtol=1e-3, atol=1e-4)
    rows, v = metric_values(a, "toy_half_prob")
    np.testing.assert_array_equal(rows, np.arange(a.n_rows))
    np.testing.assert_allclose(v, a.top_probs[..., 0] / 2, rtol=1e-6)
    w = ResidWidget(demo_session, "Mr. and Mrs.", metric="toy_half_prob")
    assert w.metric == "toy_half_prob" and "toy_half_prob" in w._meta["arrays"]
    w.close()


def test_without_runtime_metrics_the_header_is_unchanged(demo_session):
    meta, _ = encode_analysis(demo_session.analyze("Mr. and Mrs."))
    assert "extra_metrics" not in meta and "toy_half_prob" not in METRIC_SPECS


def test_parse_edit_keeps_values_for_the_run():
    e = parse_edit({"type": "edit", "view": "v", "seq": 3, "changes": {"top_k": 101}, "window": [0, 4]})
    assert e.changes == {"top_k": 101} and e.window == (0, 4)  # checked when it runs, in order


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_generated_ts_types_are_up_to_date():
    """js/src/contract.gen.ts is generated from protocol.json (npm run build regenerates it)."""
    before = (ROOT / "js/src/contract.gen.ts").read_text(encoding="utf-8")
    subprocess.run(["node", str(ROOT / "js/scripts/gen-contract.mjs"), "--check"], check=True)
    assert (ROOT / "js/src/contract.gen.ts").read_text(encoding="utf-8") == before


def test_metric_literal_count_is_measured():
    """The figure of the report (scripts/count_metric_literals.py), kept from growing back."""
    out = subprocess.run(["python3", str(ROOT / "scripts/count_metric_literals.py")], capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) <= 100


def test_default_colour_is_a_probability(demo_session):
    w = ResidWidget(demo_session, "Mr. and Mrs.")
    assert w.metric == "top1_prob"
    w.close()
    w = ResidWidget(demo_session, "Mr. and Mrs.", targets=[" Bennet"])
    assert w.metric == "target_rank"
    w.close()


def test_switching_back_to_a_computed_lens_is_instant(demo_session):
    """Issue 19 item 6: a lens computed before comes from the cache in the message handler itself:
    no job, no "computing" status at any moment, the payload answers the edit."""
    w = ResidWidget(demo_session, "Mr. and Mrs.")
    try:
        send_collect(w, {"type": "edit", "view": "v", "seq": 1, "changes": {"lens": "tuned"}})
        assert w.analysis.lens == "tuned"
        statuses = []
        w.observe(lambda ch: statuses.append(ch["new"]), names="status")
        job = w._queue.last_job
        acks = send_collect(w, {"type": "edit", "view": "v", "seq": 2, "changes": {"lens": "logit"}})
        assert w.analysis.lens == "logit" and w.lens == "logit" and w._meta["client_seq"] == 2
        assert statuses in ([], ["idle"]) and w._queue.last_job is job and [a["seq"] for a in acks] == [2]
    finally:
        w.close()


def test_header_sends_the_bos_positions(demo_session):
    """The browser reads BOS from the header (version 3) instead of assuming position 0."""
    a = demo_session.analyze("Mr. and Mrs.")
    meta, _ = encode_analysis(a)
    assert meta["bos_positions"] == [int(i) for i in np.flatnonzero(a.is_bos)] == [0] and meta["version"] == 3
