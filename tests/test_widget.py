"""ResidWidget without a browser: payload round trip, trait sync, edits, stale replies, errors."""

import json
import threading

import numpy as np
import pytest

from conftest import native_bridge
from resid_widgets import ResidWidget, Session
from resid_widgets.payload import GRID_SCALE, TAU_GRID, decode_payload, encode_analysis

F16 = dict(rtol=1e-3, atol=1e-3)  # float16 on the wire: 11 significant bits


@pytest.fixture()
def widget(tiny_session):
    w = ResidWidget(tiny_session, "Mr. and Mrs. Bennet had five daughters.", targets=[" It", " This"], top_k=5)
    yield w
    w.close()


def test_payload_round_trip(widget):
    a = widget.analysis
    arrays = decode_payload(widget._meta, widget._payload)
    meta = widget._meta
    assert (meta["n_rows"], meta["n_tokens"], meta["top_k"]) == (a.n_rows, a.n_tokens, 5)
    np.testing.assert_array_equal(arrays["token_ids"], a.token_ids)
    np.testing.assert_array_equal(arrays["top1_id"], a.top_ids[..., 0])
    np.testing.assert_allclose(arrays["top1_prob"], a.top_probs[..., 0], **F16)
    np.testing.assert_allclose(arrays["proj_pct"], a.projection_pct, **F16)
    np.testing.assert_allclose(arrays["proj_final"], a.projection_final_pct, **F16)
    for g, tau in enumerate(TAU_GRID):
        np.testing.assert_allclose(arrays["proj_grid_pct"][g], a.projection_at(tau), atol=0.5 / GRID_SCALE + 1e-4)
    assert meta["k_grid"] == [a.k_for_tau(t) for t in TAU_GRID] and len(meta["tau_grid"]) >= 20
    np.testing.assert_allclose(arrays["resid_norm"], a.resid_norm, **F16)
    np.testing.assert_allclose(arrays["attn_norm"], a.attn_norm, **F16)
    np.testing.assert_allclose(arrays["mlp_norm"], a.mlp_norm, **F16)
    np.testing.assert_array_equal(arrays["target_rank"], a.target_ranks)
    np.testing.assert_allclose(arrays["target_prob"], a.target_probs, **F16)
    np.testing.assert_allclose(arrays["logit_diff"], a.logit_diff(" It", " This"), **F16)
    assert meta["logit_diff"] == {"answer": " It", "counterfactual": " This"}
    # every id shown in the heatmap or the strip has its text, once
    ids = set(a.token_ids.tolist()) | set(a.top_ids[..., 0].ravel().tolist())
    assert set(map(int, meta["strings"])) == ids
    assert all(meta["strings"][str(i)] == a.strings[i] for i in ids)
    assert "top_ids" not in meta["arrays"]  # full top-k lists are fetched lazily
    json.dumps(meta)  # plain JSON


def test_python_side_prompt_change_recomputes(widget):
    seq = widget._meta["seq"]
    widget.prompt = "This is a sentence."
    assert widget.analysis.prompt == "This is a sentence."
    assert widget._meta["seq"] == seq + 1 and widget._meta["prompt"] == "This is a sentence."
    assert widget._meta["client_seq"] == 0


def test_bad_python_value_raises_and_keeps_view(widget):
    meta, payload, prompt = widget._meta, widget._payload, widget.prompt
    with pytest.raises(ValueError, match="empty"):
        widget.prompt = ""
    assert widget.prompt == prompt and widget._meta is meta and widget._payload == payload
    assert "empty" in widget.error
    with pytest.raises(ValueError, match="not one"):
        widget.targets = [" Paris France"]
    with pytest.raises(ValueError, match="tau"):
        widget.tau = 0
    widget.prompt = "Go."
    assert widget.error == ""


def test_tau_change_rethresholds_without_forward(widget, monkeypatch):
    def no_forward(*args, **kwargs):
        raise AssertionError("no forward pass expected")

    monkeypatch.setattr(widget.session, "_run", no_forward)
    widget.tau = 0.5
    assert widget._meta["tau"] == 0.5 and widget._meta["k"] == widget.analysis.k_for_tau(0.5)
    np.testing.assert_allclose(decode_payload(widget._meta, widget._payload)["proj_pct"], widget.analysis.projection_at(0.5), **F16)


def test_browser_edit_runs_in_worker_and_updates_traits(widget):
    widget._on_frontend_msg(widget, {"type": "edit", "seq": 1, "changes": {"prompt": "Go.", "targets": [" It"]}}, [])
    widget.wait()
    assert widget.prompt == "Go." and widget.targets == [" It"]
    assert widget._meta["client_seq"] == 1 and widget._meta["n_tokens"] == widget.analysis.n_tokens
    assert widget.status == "idle" and widget.error == ""


def test_browser_edit_error_keeps_last_view(widget):
    meta = widget._meta
    widget._on_frontend_msg(widget, {"type": "edit", "seq": 3, "changes": {"prompt": "   "}}, [])
    widget.wait()
    assert "empty" in widget.error and widget._meta is meta and widget.status == "idle"
    widget._on_frontend_msg(widget, {"type": "edit", "seq": 4, "changes": {"targets": [" zzzz qqq"]}}, [])
    widget.wait()
    assert "not one" in widget.error and widget._meta is meta


def test_stale_reply_never_overwrites_newer(widget):
    """Edit 1 is slow; edit 2 arrives meanwhile: only edit 2's result is ever shown."""
    release = threading.Event()
    started = threading.Event()
    real = widget._compute
    published = []

    def slow_compute(prompt, *args, **kwargs):
        if prompt == "first edit":
            started.set()
            release.wait(10)
        return real(prompt, *args, **kwargs)

    widget._compute = slow_compute
    widget.observe(lambda ch: published.append(ch["new"]["client_seq"]), names="_meta")
    widget._on_frontend_msg(widget, {"type": "edit", "seq": 1, "changes": {"prompt": "first edit"}}, [])
    assert started.wait(10)
    widget._on_frontend_msg(widget, {"type": "edit", "seq": 2, "changes": {"prompt": "second edit"}}, [])
    release.set()
    widget.wait()
    assert published == [2]
    assert widget.prompt == "second edit" and widget._meta["prompt"] == "second edit"


def test_details_reply(widget, monkeypatch):
    sent = []
    monkeypatch.setattr(widget, "send", lambda content, buffers=None: sent.append(content))
    widget._on_frontend_msg(widget, {"type": "details", "req": 7, "seq": widget._meta["seq"], "pos": 2}, [])
    (reply,) = sent
    a = widget.analysis
    assert reply["req"] == 7 and reply["seq"] == widget._meta["seq"]
    assert reply["top_ids"] == a.top_ids[:, 2].tolist()
    np.testing.assert_allclose(reply["top_probs"], a.top_probs[:, 2], rtol=1e-6)
    assert all(reply["strings"][str(i)] == a.strings[i] for i in np.unique(a.top_ids[:, 2]))
    widget._on_frontend_msg(widget, {"type": "details", "req": 8, "pos": 999}, [])
    assert sent[-1]["req"] == 8 and "outside" in sent[-1]["error"]


def test_widgets_share_one_session(tiny_session):
    a = ResidWidget(tiny_session, "Go.")
    b = ResidWidget(tiny_session, "Hello.")
    assert a.session is b.session is tiny_session
    a.close(), b.close()


def test_first_view_of_1024_tokens_fits_budget():
    """12 layers x 1,024 tokens, GPT-2 vocabulary: first view <= 1 MB, <= 64 bytes per cell."""
    model = native_bridge("LN", n_layers=12, d_vocab=50257, n_ctx=1024, seed=2)
    s = Session(model)
    rng = np.random.default_rng(0)
    a = s.analyze(rng.integers(0, 50257, 1024), top_k=10, targets=[11, 13])
    meta, blob = encode_analysis(a)
    total = len(blob) + len(json.dumps(meta))
    assert total <= 1_000_000, total
    assert len(blob) / (a.n_rows * a.n_tokens) <= 64


# ---- several views of one widget (issue 12 item 2) ---------------------------------------------


def _edit(widget, view, seq, **changes):
    widget._on_frontend_msg(widget, {"type": "edit", "view": view, "seq": seq, "changes": changes}, [])


def test_two_views_edit_alternately(widget, monkeypatch):
    """Each view counts its own edits from 1: an edit from the second view after three from the first
    is applied (arrival order), every edit is acknowledged to its own view, and the widget ends idle."""
    sent = []
    monkeypatch.setattr(widget, "send", lambda content, buffers=None: sent.append(content))
    texts = ["One.", "One two.", "One two three."]
    for i, text in enumerate(texts, 1):
        _edit(widget, "view-a", i, prompt=text)
        widget.wait()
        assert widget.prompt == text and widget._meta["client_seq"] == i
    _edit(widget, "view-b", 1, prompt="From the second view.")
    widget.wait()
    assert widget.prompt == "From the second view." and widget.analysis.prompt == "From the second view."
    assert (widget._meta["client_view"], widget._meta["client_seq"]) == ("view-b", 1)
    _edit(widget, "view-a", 4, prompt="Back to the first.")
    widget.wait()
    _edit(widget, "view-b", 2, targets=[" It"])
    widget.wait()
    assert widget.prompt == "Back to the first." and widget.targets == [" It"]
    assert widget.status == "idle" and widget.error == ""
    acks = [(m["view"], m["seq"]) for m in sent if m.get("type") == "edit_done"]
    assert acks == [("view-a", 1), ("view-a", 2), ("view-a", 3), ("view-b", 1), ("view-a", 4), ("view-b", 2)]


def test_superseded_and_failed_edits_are_acknowledged(widget, monkeypatch):
    """A view waits only for its own edit: a superseded edit and a failed one are acknowledged too."""
    sent = []
    monkeypatch.setattr(widget, "send", lambda content, buffers=None: sent.append(content))
    release, started = threading.Event(), threading.Event()
    real = widget._compute

    def slow(prompt, *args, **kwargs):
        if prompt == "slow":
            started.set()
            release.wait(10)
        return real(prompt, *args, **kwargs)

    widget._compute = slow
    _edit(widget, "a", 1, prompt="slow")
    assert started.wait(10)
    _edit(widget, "b", 1, prompt="   ")  # arrives later, fails
    _edit(widget, "a", 2, targets=[" It"])  # arrives last: applies on top of b's prompt, which fails
    release.set()
    widget.wait()
    acks = sorted((m["view"], m["seq"]) for m in sent if m.get("type") == "edit_done")
    assert acks == [("a", 1), ("a", 2), ("b", 1)]
    assert widget.status == "idle" and "empty" in widget.error
    _edit(widget, "b", 2, prompt="Fine again.")  # after an error, edits start from the widget's values
    widget.wait()
    assert widget.prompt == "Fine again." and widget.error == "" and widget.status == "idle"


# ---- validated traits; every rejected value reaches the banner (issue 12 item 11) ----------------


@pytest.mark.parametrize(
    "name, value",
    [("layer", -1), ("layer", 99), ("selected", [0, 99]), ("selected", [99, 0]), ("selected", [1]),
     ("top_k", 0), ("top_k", 101), ("top_k", "abc"), ("layer", "x"), ("tau", "0.5"), ("metric", "nope")],
)
def test_bad_trait_values_raise_and_show_in_the_banner(widget, name, value):
    from traitlets import TraitError

    meta, payload, before = widget._meta, widget._payload, getattr(widget, name)
    with pytest.raises(TraitError):
        setattr(widget, name, value)
    assert getattr(widget, name) == before and widget._meta is meta and widget._payload == payload
    assert widget.error and (name in widget.error or str(value) in widget.error), widget.error


def test_good_trait_value_clears_a_trait_error(widget):
    from traitlets import TraitError

    R, T = widget.analysis.n_rows, widget.analysis.n_tokens
    with pytest.raises(TraitError, match="layer"):
        widget.layer = R
    assert "0..%d" % (R - 1) in widget.error
    widget.layer = R - 1
    assert widget.error == ""
    widget.selected = [R - 1, T - 1]
    widget.selected = []
    widget.top_k = 100
    assert widget.analysis.top_k == 100 and widget.error == ""


# ---- targets round trip, suggestions, characters of byte tokens (issue 12 items 8, 9, 13) --------


def test_targets_written_back_are_the_analysis_targets(widget):
    """What a browser edit writes back into w.targets is exactly analysis.targets, and it can be set
    again from Python unchanged."""
    tid = int(widget.session.tokenizer.encode(" This", add_special_tokens=False)[0])
    _edit(widget, "v", 1, targets=[" It", tid])
    widget.wait()
    assert widget.error == ""
    assert widget.targets == list(widget.analysis.targets) == widget._meta["targets"]
    assert list(widget.analysis.target_ids) == [int(widget.session.tokenizer.encode(" It", add_special_tokens=False)[0]), tid]
    widget.prompt = "It was fine."  # the written-back names are accepted back as input
    assert widget.error == "" and widget.analysis.targets == widget.targets


def test_duplicate_target_names_round_trip(widget):
    """A browser edit with targets [" It", <id of " It">]: the second is reported as " It (#id)", the
    targets field shows that, and every later edit accepts it back (issue 12 item 8)."""
    tid = int(widget.session.tokenizer.encode(" It", add_special_tokens=False)[0])
    _edit(widget, "v", 1, targets=[" It", tid])
    widget.wait()
    assert widget.targets == list(widget.analysis.targets) and len(set(widget.targets)) == 2
    widget.prompt = "It was fine."
    assert widget.error == "" and list(widget.analysis.target_ids) == [tid, tid]


def test_suggested_targets_are_single_tokens_of_the_vocabulary(demo_session):
    w = ResidWidget(demo_session, "Mr. and Mrs.")
    try:
        tok = demo_session.tokenizer
        sugg = w._meta["suggested_targets"]
        assert 1 <= len(sugg) <= 4
        a = w.analysis
        top1_any_row = a.top_ids[:, -1, 0].tolist()  # what the rows' lens predicted first at the last position
        assert tok.encode(sugg[0], add_special_tokens=False) == [a.top_ids[-1, -1, 0]]  # the model's own answer first
        for s in sugg:
            (tid,) = tok.encode(s, add_special_tokens=False)  # exactly one token ...
            assert (tid in top1_any_row or tid in a.top_ids[-1, -1].tolist()) and tok.decode([tid]) == s
        distinct_top1 = [t for t in dict.fromkeys(top1_any_row[::-1])]
        assert len(sugg) >= min(4, len(distinct_top1)) - 1  # the rows' distinct top-1 tokens are offered
        assert " Paris" not in sugg
    finally:
        w.close()


def test_byte_tokens_map_to_their_characters(demo_session):
    from resid_widgets.session.tokens import multibyte_chars

    tok = demo_session.tokenizer
    text = "😀 and 日本"
    ids = tok.encode(text, add_special_tokens=False)
    runs = multibyte_chars(tok, ids)
    # independent check: the positions of each character decode (together, and only together) to it
    by_char: dict[str, list[int]] = {}
    for pos, entries in runs.items():
        for ch, first, last, n in entries:
            by_char.setdefault(ch, []).append(pos)
            assert n == len(ch.encode("utf-8")) and 1 <= first <= last <= n
    assert set(by_char) == {"😀", "日", "本"}
    for ch, positions in by_char.items():
        assert positions == list(range(positions[0], positions[-1] + 1))
        assert tok.decode([ids[p] for p in positions]) == ch
        assert all("\ufffd" in tok.decode([ids[p]]) for p in positions)  # each alone is not a character
    emoji = [runs[p][0] for p in by_char["😀"]]
    assert emoji[0][1] == 1 and emoji[-1][2] == 4  # bytes 1.. of 4 .. 4 of 4
    assert all(a[2] + 1 == b[1] for a, b in zip(emoji, emoji[1:]))  # consecutive byte ranges
    assert all(p not in runs for p, i in enumerate(ids) if "\ufffd" not in tok.decode([i]))  # whole tokens: none

    w = ResidWidget(demo_session, text)
    try:
        chars = w._meta["chars"]
        offset = int(w.analysis.is_bos[0])  # the widget's positions include the BOS
        assert {int(p) - offset for p in chars} == set(runs)
        assert all(chars[str(p + offset)] == [list(e) for e in runs[p]] for p in runs)
    finally:
        w.close()


def test_token_id_prompt_is_a_clear_error(demo_session):
    """The widget's prompt is text (its editor shows and edits it): token ids get a TypeError naming the way
    to analyse them, not an "unhashable list" from the widget's cache."""
    with pytest.raises(TypeError, match="prompt is text"):
        ResidWidget(demo_session, [1, 50, 60, 70])
