"""Session: loading, tokenisation, batches, edits, and clear errors for bad input."""

import numpy as np
import pytest
import torch

from conftest import native_bridge
from resid_widgets import Session
from resid_widgets.session.loading import load_model

FIELDS = ["top_ids", "top_probs", "target_ranks", "target_logits", "projection_pct", "resid_norm", "attn_norm", "mlp_norm"]


def _assert_same(a, b, tol=1e-4):
    assert a.tokens == b.tokens
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if f == "top_ids":
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f)


def test_local_directory_loads_through_transformer_bridge(tiny_session):
    assert type(tiny_session.model).__name__ == "TransformerBridge"
    a = tiny_session.analyze("The capital of France is", top_k=3, targets=[" Paris"])
    assert a.is_bos[0] and not a.is_bos[1:].any()
    assert a.tokens[0] == "<|endoftext|>" and "".join(a.tokens[1:]) == "The capital of France is"
    assert a.info["unembed_centred"]  # compatibility mode centred W_U
    assert a.top_tokens.shape == (tiny_session.n_layers + 1, len(a.tokens), 3)


def test_batch_equals_single(tiny_session):
    prompts = ["Go.", "This is a sentence. This is another sentence.", "Mr. and Mrs. Bennet"]
    batch = tiny_session.analyze_batch(prompts, top_k=4, targets=[" It", " This"])
    for p, b in zip(prompts, batch):
        single = Session(tiny_session.model).analyze(p, top_k=4, targets=[" It", " This"])
        _assert_same(single, b)
        assert b.n_tokens == len(single.tokens)  # the last real token is at n_tokens - 1, not a pad


def test_edit_reuses_prefix_and_matches_fresh(tiny_session, monkeypatch):
    """An edit runs the forward pass and the lens only from the first changed token on, and equals a fresh run."""
    import resid_widgets.analyses.pipeline as pipeline

    cells, forwards = [], []
    real_read = pipeline.read_block
    monkeypatch.setattr(pipeline, "read_block", lambda normed, *a, **k: cells.append(normed.shape[0] * normed.shape[1]) or real_read(normed, *a, **k))
    s = Session(tiny_session.model)
    real_run = s._run
    monkeypatch.setattr(s, "_run", lambda ids, past=None: forwards.append(ids.shape[1]) or real_run(ids, past))
    first = s.analyze("This is a sentence. This is another sentence.", targets=[" It"])
    cells.clear(), forwards.clear()
    edited = s.analyze("This is a sentence. This is another daughter.", targets=[" It"])
    same = next(i for i, (x, y) in enumerate(zip(first.token_ids, edited.token_ids)) if x != y)
    new = edited.n_tokens - same
    assert forwards[0] == new  # the forward pass ran on the new suffix only (then once in full, to check the cache)
    assert sum(cells) == edited.n_rows * new  # the final row + the other rows, new positions only
    fresh = Session(tiny_session.model).analyze("This is a sentence. This is another daughter.", targets=[" It"])
    _assert_same(edited, fresh)


def test_edit_reuse_notices_weights_changed_in_place():
    """Same prefix tokens but edited weights (an ablation): nothing stale is reused."""
    model = native_bridge("LN", seed=11)
    s = Session(model)
    s.analyze([5, 6, 7, 8, 9])
    with torch.no_grad():
        bias = dict(model.named_parameters())["layers.0._original_component.mlp._original_component.fc_out._original_component.bias"]
        bias.add_(torch.randn(bias.shape, generator=torch.Generator().manual_seed(0)))  # not uniform: LN would cancel that
    after = s.analyze([5, 6, 7, 8, 10])
    fresh = Session(model).analyze([5, 6, 7, 8, 10])
    _assert_same(after, fresh)


def test_token_ids_work_without_tokenizer(ln_model):
    s = Session(ln_model)
    a = s.analyze(torch.tensor([1, 2, 3]))
    assert a.tokens == ["#1", "#2", "#3"] and not a.is_bos.any()
    with pytest.raises(ValueError, match="no tokenizer"):
        s.analyze("hello")
    with pytest.raises(ValueError, match="no tokenizer"):
        s.analyze([1, 2], targets=["x"])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(prompt=""), ValueError, "empty"),
        (dict(prompt="   "), ValueError, "empty"),
        (dict(prompt=42), TypeError, "string or a sequence"),
        (dict(prompt="word " * 200), ValueError, "context"),
        (dict(prompt="Hi", targets=[" Paris France"]), ValueError, "not one"),
        (dict(prompt="Hi", targets=[""]), ValueError, "empty"),
        (dict(prompt="Hi", targets=[10**7]), ValueError, "outside the vocabulary"),
        (dict(prompt="Hi", top_k=0), ValueError, "top_k"),
        (dict(prompt="Hi", top_k=10**6), ValueError, "top_k"),
        (dict(prompt="Hi", top_k=2.5), TypeError, "top_k"),
        (dict(prompt="Hi", tau=0.0), ValueError, "tau"),
        (dict(prompt="Hi", tau=1.5), ValueError, "tau"),
        (dict(prompt=[]), ValueError, "empty"),
        (dict(prompt=[1, -3]), ValueError, r"\[0,"),
    ],
)
def test_bad_input_errors(tiny_session, kwargs, exc, match):
    prompt = kwargs.pop("prompt")
    with pytest.raises(exc, match=match):
        tiny_session.analyze(prompt, **kwargs)


def test_nan_activations_name_the_hook():
    model = native_bridge("LN", seed=9)
    with torch.no_grad():
        dict(model.named_parameters())["layers.1._original_component.mlp._original_component.fc_out._original_component.bias"].fill_(float("nan"))
    with pytest.raises(ValueError, match=r"blocks\.1\.hook_mlp_out"):
        Session(model).analyze([1, 2, 3])


def test_load_model_rejects_non_models():
    with pytest.raises(TypeError, match="run_with_cache"):
        load_model(object())
    with pytest.raises(ValueError, match="empty"):
        load_model("  ")


def test_dataframe_long_format(tiny_session):
    a = tiny_session.analyze("Mr. and Mrs.", targets=[" Bennet"] if len(tiny_session.tokenizer.encode(" Bennet")) == 1 else None)
    df = a.to_dataframe()
    assert len(df) == a.n_rows * a.n_tokens
    assert df["top1_prob"].to_numpy().reshape(a.n_rows, a.n_tokens).tolist() == a.top_probs[..., 0].tolist()
    assert np.isnan(df.loc[df.row == 0, "attn_norm"]).all()


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, resid_widgets; print(sorted(m for m in ('torch','transformer_lens','anywidget','bqplot','transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_partial_utf8_tokens_show_their_bytes(demo_session):
    """A token holding part of a UTF-8 character shows its bytes, not an anonymous U+FFFD."""
    a = demo_session.analyze("Café naïve")
    assert "\ufffd" not in "".join(a.tokens)
    assert "\\xc3" in a.tokens and "\\xa9" in a.tokens


def test_id_targets_with_the_same_text_stay_distinct(demo_session):
    names, ids = demo_session.resolve_targets([1, 1])
    assert len(set(names)) == 2 and ids == [1, 1]


def test_unembedding_edited_in_place_is_not_served_stale():
    """analyze(P); W_U[:, 17] *= 50; analyze(P) must equal a fresh session (lens memo, SVD, facts rebuilt)."""
    model = native_bridge("LN", seed=13)
    s = Session(model)
    before = s.analyze([3, 4, 5, 6, 7])
    svd_before = s.subspace.singular_values.copy()
    with torch.no_grad():
        model.W_U[:, 17] *= 50
    after = s.analyze([3, 4, 5, 6, 7])
    fresh = Session(model).analyze([3, 4, 5, 6, 7])
    _assert_same(after, fresh)
    assert (after.top_ids != before.top_ids).any()  # the edit matters for the lens ...
    assert not np.allclose(s.subspace.singular_values, svd_before)  # ... and for the token subspace
    np.testing.assert_allclose(after.singular_values, fresh.singular_values, rtol=1e-5)


def test_nan_in_readout_weights_is_a_clear_error():
    model = native_bridge("LN", seed=14)
    s = Session(model)
    s.analyze([1, 2, 3])  # the SVD and facts are cached now
    with torch.no_grad():
        model.W_U[:, 999] = float("nan")  # a token the prompt never uses
    with pytest.raises(ValueError, match=r"non-finite .* W_U \(token ids \[999\]\)"):
        s.analyze([1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        s.subspace
    fresh = native_bridge("LN", seed=15)
    with torch.no_grad():
        next(p for n, p in fresh.ln_final.named_parameters() if n.endswith("weight")).fill_(float("nan"))
    with pytest.raises(ValueError, match=r"non-finite .* ln_final\.weight"):
        Session(fresh).analyze([1, 2, 3])


def test_nan_weights_exit_2_in_the_cli(capsys, monkeypatch):
    import resid_widgets.session as session_pkg
    from resid_widgets.cli import main

    model = native_bridge("LN", seed=16)
    with torch.no_grad():
        model.W_U[:, 3] = float("inf")
    monkeypatch.setattr(session_pkg, "Session", lambda *a, **k: Session(model))
    assert main(["analyze", "x", "--top-k", "2"]) == 2
    assert "non-finite" in capsys.readouterr().err


def test_reported_targets_round_trip(demo_session):
    """What an Analysis reports as its targets is accepted back as input and means the same ids."""
    enc = lambda text: demo_session.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    (the,) = enc(" the")
    other = next(i for i in range(demo_session.d_vocab) if enc(demo_session.token_strings([i])[i]) != [i])  # text is ambiguous
    names, ids = demo_session.resolve_targets([" the", the, other])
    assert ids == [the, the, other]
    assert len(set(names)) == 3
    assert demo_session.resolve_targets(names) == (names, ids)
    a = demo_session.analyze("Mr. and Mrs.", targets=[" the", 267])
    assert demo_session.analyze("Mr. and Mrs. Bennet", targets=a.targets).target_ids == a.target_ids


def test_every_multi_token_target_is_named(demo_session):
    tok = demo_session.tokenizer
    bad = [t for t in (" Paris", "zzzz qqq") if len(tok.encode(t, add_special_tokens=False)) != 1]
    assert len(bad) == 2
    with pytest.raises(ValueError) as err:
        demo_session.resolve_targets([" the", *bad])
    msg = str(err.value)
    assert "' Paris' is" in msg and "'zzzz qqq' is" in msg and "' the' is" not in msg


@pytest.mark.parametrize("tau", ["0.5", None, True])
def test_tau_must_be_a_number(ln_model, tau):
    with pytest.raises(TypeError, match="tau must be a number"):
        Session(ln_model).analyze([1, 2], tau=tau)
