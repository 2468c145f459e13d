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
