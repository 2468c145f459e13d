"""Logit lens numbers against independent computations (model logits, ln_final recomputed in the test)."""

import numpy as np
import pytest
import torch

from conftest import ABS_TOL, REL_TOL
from reference import lens_logits, resid_rows, single_run
from resid_widgets import Session

TOKENS = [3, 17, 256, 999, 42, 7, 7, 500, 1, 64, 300]


def _independent_logits(model, tokens):
    """[R, T, V] logits of every residual row, computed here from TransformerLens's own cache."""
    _, logits, cache = single_run(model, tokens)
    return logits, lens_logits(model, resid_rows(model, cache))


@pytest.mark.parametrize("fixture", ["ln_model", "rms_model", "biased_model"])
def test_lens_matches_independent_readout(fixture, request):
    model = request.getfixturevalue(fixture)
    a = Session(model).analyze(TOKENS, top_k=5, targets=[42, 999])
    model_logits, lens = _independent_logits(model, TOKENS)
    # the last row is the model's own output
    np.testing.assert_allclose(lens[-1].numpy(), model_logits.numpy(), rtol=REL_TOL, atol=ABS_TOL)
    probs = torch.softmax(lens.double(), -1)
    top_p, top_i = probs.topk(5, dim=-1)
    np.testing.assert_array_equal(a.top_ids, top_i.numpy())
    np.testing.assert_allclose(a.top_probs, top_p.numpy(), rtol=REL_TOL, atol=1e-6)
    # last row against the model's own logits, directly
    np.testing.assert_allclose(
        a.top_probs[-1], torch.softmax(model_logits.double(), -1).topk(5, -1).values.numpy(), rtol=REL_TOL, atol=1e-6
    )
    for j, t in enumerate([42, 999]):
        np.testing.assert_allclose(a.target_logits[..., j], lens[..., t].numpy(), rtol=REL_TOL, atol=ABS_TOL)
        np.testing.assert_allclose(a.target_probs[..., j], probs[..., t].numpy(), rtol=REL_TOL, atol=1e-7)
        expected_rank = (lens > lens[..., t : t + 1]).sum(-1).numpy()
        np.testing.assert_array_equal(a.target_ranks[..., j], expected_rank)
    assert a.info["lens_vs_model_max_abs"] < 1e-4


def test_missing_unembed_bias_would_be_caught(biased_model):
    """Guard that the biased fixture really distinguishes ln_final(r) @ W_U + b_U from @ W_U alone."""
    _, lens = _independent_logits(biased_model, TOKENS)
    no_bias = lens - biased_model.b_U
    assert (torch.softmax(lens, -1) - torch.softmax(no_bias, -1)).abs().max() > 1e-3


def test_each_row_uses_its_own_layernorm(biased_model):
    """Reusing the final position's / final layer's LN scale (a known bug) gives different numbers."""
    a = Session(biased_model).analyze(TOKENS, top_k=3)
    with torch.no_grad():
        _, cache = biased_model.run_with_cache(torch.tensor([TOKENS]))
        r0 = cache["blocks.0.hook_resid_pre"][0]
        final_scale = cache["ln_final.hook_scale"][0]
        centred = r0 - r0.mean(-1, keepdim=True)
        wrong = (centred / final_scale) @ biased_model.W_U + biased_model.b_U
    wrong_top = torch.softmax(wrong, -1).topk(3, -1).values.numpy()
    assert np.abs(wrong_top - a.top_probs[0]).max() > 1e-3


def test_logit_diff(biased_model):
    a = Session(biased_model).analyze(TOKENS, targets=[42, 999])
    _, lens = _independent_logits(biased_model, TOKENS)
    np.testing.assert_allclose(a.logit_diff(42, 999), (lens[..., 42] - lens[..., 999]).numpy(), rtol=REL_TOL, atol=ABS_TOL)
    with pytest.raises(KeyError, match="targets"):
        a.logit_diff(42, 5)


def test_lens_against_hf_hidden_states(tiny_session, tiny_hf_dir):
    """Independent of TransformerLens: the HF model's hidden states and its own ln_f / lm_head."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    a = tiny_session.analyze("Mr. and Mrs. Bennet had five daughters.", top_k=4)
    ids = torch.as_tensor(a.token_ids)[None]
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
    hidden = out.hidden_states  # embeddings, after block 0, ..., after the last block (with ln_f applied)
    L = tiny_session.n_layers
    for r in range(L):  # rows 0..L-1 are the residual stream (compatibility mode centres writing weights)
        h = hidden[r][0]
        np.testing.assert_allclose(a.resid[r], (h - h.mean(-1, keepdim=True)).numpy(), rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            logp = torch.log_softmax(hf.lm_head(hf.transformer.ln_f(hidden[r][0])), -1)
        np.testing.assert_allclose(np.log(a.top_probs[r]), logp.topk(4, -1).values.numpy(), rtol=1e-4, atol=1e-4)
    final = torch.log_softmax(out.logits[0], -1)
    np.testing.assert_allclose(np.log(a.top_probs[-1]), final.topk(4, -1).values.numpy(), rtol=1e-4, atol=1e-4)


def test_known_logits_path_equals_the_product():
    from resid_widgets.analyses.lens import lens_readout

    g = torch.Generator().manual_seed(0)
    W, b, x = torch.randn(16, 300, generator=g), torch.randn(300, generator=g), torch.randn(40, 16, generator=g)
    plain = lens_readout(x, W, b, top_k=5, target_ids=[3, 7], chunk_elements=300 * 7)
    known = lens_readout(x, W, b, top_k=5, target_ids=[3, 7], chunk_elements=300 * 7, known_logits=x[-13:] @ W + b)
    for field in ("top_ids", "top_probs", "log_norm", "target_logits", "target_ranks"):
        np.testing.assert_allclose(getattr(known, field), getattr(plain, field), rtol=1e-6, atol=1e-6)


def test_model_output_that_differs_from_the_formula_is_not_reused(biased_model, monkeypatch):
    """If the model's own logits are not ln_final(r) @ W_U + b_U (e.g. soft-capped), every row uses the formula."""
    s = Session(biased_model)
    real_run = s._run

    def soft_capped(ids):
        logits, cache = real_run(ids)
        return 5 * torch.tanh(logits / 5), cache

    monkeypatch.setattr(s, "_run", soft_capped)
    a = s.analyze(TOKENS, top_k=5)
    _, lens = _independent_logits(biased_model, TOKENS)
    np.testing.assert_allclose(a.top_probs[-1], torch.softmax(lens[-1].double(), -1).topk(5, -1).values.numpy(), rtol=REL_TOL, atol=1e-6)
    assert a.info["lens_vs_model_max_abs"] > 1e-3  # and the difference is reported
