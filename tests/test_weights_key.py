"""Weights changed behind the session's back (issue 20, items 1 and 7): every cache is keyed on the
weights' bytes, so an edit through ``.data`` (which does not bump ``_version``) is never served stale;
``session.editing()`` holds the session's lock so a weight edit never lands in the middle of an analysis."""

import threading

import numpy as np
import pytest
import torch

from conftest import native_bridge
from resid_widgets import Session
from resid_widgets.session import fingerprint

FIELDS = ["top_ids", "top_probs", "target_ranks", "projection_pct", "resid_norm", "attn_norm", "mlp_norm", "kl"]


def _assert_same(a, b, tol=1e-4):
    assert a.k == b.k
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f)


@pytest.fixture(scope="module")
def hf_session(tiny_hf_dir):
    """A model loaded from a Hugging Face directory: an edit reuses its key/value cache."""
    return Session(str(tiny_hf_dir), device="cpu")


def test_unembedding_scaled_through_data_gets_a_fresh_svd():
    model = native_bridge("LN", seed=21, d_vocab=2000)
    s = Session(model)
    before = s.analyze([3, 4, 5, 6, 7], tau=0.9)
    version = model.W_U._version
    model.W_U.data[:, 1000:].mul_(0.01)  # does not bump the version counter
    assert model.W_U._version == version
    after = s.analyze([3, 4, 5, 6, 7], tau=0.9)
    fresh = Session(model).analyze([3, 4, 5, 6, 7], tau=0.9)
    assert after.k == fresh.k and after.k != before.k  # the edit changes the subspace's size
    np.testing.assert_allclose(after.singular_values, fresh.singular_values, rtol=1e-5)
    np.testing.assert_allclose(after.projection_pct, fresh.projection_pct, atol=1e-3)
    _assert_same(after, fresh)


def test_middle_layer_scaled_through_data_is_not_reused_by_an_edit(hf_session):
    s = hf_session
    s.analyze("This is a sentence. This is another sentence.")
    p = dict(s.model.named_parameters())
    name = next(n for n in p if ".1." in n and n.endswith("weight") and p[n].ndim == 2)
    key = s._params_key()
    p[name].data.mul_(3)
    try:
        assert s._params_key() != key  # the widget's cache key changes too
        edited = s.analyze("This is a sentence. This is another daughter.")
        fresh = Session(s.model).analyze("This is a sentence. This is another daughter.")
        _assert_same(edited, fresh)
    finally:
        p[name].data.div_(3)


def test_a_buffer_edited_in_place_changes_the_key_and_the_widget_view(demo_session):
    """b_U is a buffer of a compatibility-mode bridge (not a parameter): editing it must not leave the widget's
    cached analysis (keyed on the weights) stale."""
    from resid_widgets import ResidWidget

    s = demo_session
    bu = s.model.b_U
    assert not any(bu is p for p in s.model.parameters()) and any(bu is b for b in s.model.buffers())
    w = ResidWidget(s, "The capital of France is", top_k=3)
    before, key = w.analysis.top_probs.copy(), s._params_key()
    saved = bu.detach().clone()
    try:
        with s.editing():
            bu[w.analysis.top_ids[1, -1, 1]] += 5.0  # lift row 1's second choice at the last position
        assert s._params_key() != key
        w.set_prompt("The capital of Spain is")
        w.set_prompt("The capital of France is")  # cached for the old weights: must be recomputed
        fresh = Session(s.model).analyze("The capital of France is", top_k=3)
        np.testing.assert_allclose(w.analysis.top_probs, fresh.top_probs, rtol=1e-5, atol=1e-6)
        assert not np.allclose(w.analysis.top_probs, before)
    finally:
        with s.editing():
            bu.copy_(saved)
        w.close()


def test_numpy_view_edit_and_swap_change_the_fingerprint():
    t = torch.randn(3, 5000)
    base = fingerprint.digest(t)
    t.numpy()[1, 7] += 1e-6  # a numpy view: no version bump
    assert fingerprint.digest(t) != base
    t2 = torch.randn(10000)
    b2 = fingerprint.digest(t2)
    t2.data[[0, 1]] = t2.data[[1, 0]]  # a swap keeps every sum
    assert fingerprint.digest(t2) != b2
    assert fingerprint.digest(torch.empty(3, device="meta")) != fingerprint.digest(torch.empty(3, device="meta"))


def test_device_path_fingerprint_sees_small_edits_and_swaps():
    """The path used for CUDA / MPS tensors, run on the CPU here (the device check runs it on a GPU)."""
    t = torch.randn(5, 4096 + 37)
    raw = lambda: torch.empty(0, dtype=torch.uint8).set_(t.untyped_storage())  # noqa: E731
    base = fingerprint._device_digest(raw())
    assert fingerprint._device_digest(raw()) == base
    for edit in (lambda: t.data[2, 5].add_(1e-6), lambda: t.data[4, -1].mul_(3)):
        saved = t.clone()
        edit()
        assert fingerprint._device_digest(raw()) != base
        t.data.copy_(saved)
    t.data[0, [0, 1]] = t.data[0, [1, 0]]
    assert fingerprint._device_digest(raw()) != base


def test_lens_edited_in_place_is_not_reused_by_an_edit(hf_session):
    from resid_widgets.lenses import JacobianLens

    s = Session(hf_session.model)
    lens = JacobianLens.identity(s)
    s.analyze("This is a sentence. This is another sentence.", lens=lens)
    lens.matrices[1].data.mul_(2)
    edited = s.analyze("This is a sentence. This is another daughter.", lens=lens)
    fresh = Session(s.model).analyze("This is a sentence. This is another daughter.", lens=lens)
    _assert_same(edited, fresh)


def test_editing_holds_the_lock_so_no_analysis_mixes_weights(hf_session):
    """A thread scaling a middle layer's weight (and back) under ``editing()`` while analyses run: every
    analysis equals one of the two pure states, never a mix."""
    s = Session(hf_session.model)
    prompt = "This is a sentence. This is another sentence. And a third one."
    p = dict(s.model.named_parameters())
    W = [p[n] for n in p if ".0." in n and n.endswith("weight") and p[n].ndim == 2][:2]
    clean = s.analyze(prompt).resid_norm.copy()
    for w in W:
        w.data.mul_(3)
    scaled = Session(s.model).analyze(prompt).resid_norm.copy()
    for w in W:
        w.data.div_(3)
    stop = threading.Event()

    def editor():
        while not stop.is_set():
            for factor in (3.0, 1 / 3):
                with s.editing():
                    for w in W:
                        w.mul_(factor)
                        threading.Event().wait(0.002)  # an edit that takes time: the analysis must not see half of it

    th = threading.Thread(target=editor)
    th.start()
    try:
        seen = [s.analyze(prompt).resid_norm for _ in range(8)]
    finally:
        stop.set()
        th.join()
    for r in seen:
        assert np.allclose(r, clean, rtol=1e-3) or np.allclose(r, scaled, rtol=1e-3)
    assert s.lock is s._lock


def test_the_widget_key_is_read_once_per_edit_and_never_stale(hf_session, monkeypatch):
    """``_params_key()`` hands its digests to the stream that follows on the same thread (one read of the
    weights per widget edit), but a key asked for again after a ``.data`` edit is fresh."""
    s = Session(hf_session.model)
    calls = []
    real = fingerprint.digests
    monkeypatch.setattr(fingerprint, "digests", lambda ts, known=None: calls.append(known is None) or real(ts, known))
    s._params_key()
    calls.clear()
    s.analyze("This is a sentence.")
    assert calls.count(True) == 0  # nothing read from scratch: the handoff was used
    key = s._params_key()
    p = next(p for n, p in s.model.named_parameters() if ".1." in n and p.ndim == 2)
    p.data.mul_(2)
    try:
        assert s._params_key() != key
        fresh = Session(s.model).analyze("This is a sentence. And more.")
        _assert_same(s.analyze("This is a sentence. And more."), fresh)
    finally:
        p.data.div_(2)


def test_widget_key_changes_when_a_held_lens_is_replaced_or_edited_not_when_one_is_added(demo_session):
    from resid_widgets.lenses import JacobianLens

    s = Session(demo_session.model)
    key = s._params_key()
    s.analyze("Mr. and Mrs.", lens="tuned")  # loads the shipped tuned lens: earlier analyses stay valid
    assert s._params_key() == key
    s._lenses["tuned"].matrices[0].data.mul_(1.5)
    edited = s._params_key()
    assert edited != key
    s._lenses["tuned"] = JacobianLens.identity(s)  # replaced (as load_lens / fit_lens do)
    assert s._params_key() != edited
