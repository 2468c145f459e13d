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


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_block_readout_against_numpy(softcap):
    """Every per-cell statistic of read_block against a float64 numpy computation over the full logits."""
    from resid_widgets.analyses.lens import FinalReadout, Reference, read_block
    from resid_widgets.analyses.lens import softcap as softcap_transform

    g = torch.Generator().manual_seed(0)
    P, rows, d, V = 7, 3, 16, 300
    W, b, x = torch.randn(d, V, generator=g), torch.randn(V, generator=g), torch.randn(P, rows, d, generator=g)
    out_logits = torch.randn(P, V, generator=g) * 3
    readout = FinalReadout(lambda r: r, W, b, softcap_transform(softcap) if softcap else None)
    got = read_block(x, readout, top_k=5, target_ids=[3, 7], reference=Reference.from_logits(out_logits), chunk_elements=V * rows * 2)

    z = x.double().numpy() @ W.double().numpy() + b.double().numpy()  # [P, rows, V]
    if softcap:
        z = softcap * np.tanh(z / softcap)
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    logp = z - lse[..., None]
    q = torch.log_softmax(out_logits.double(), -1).numpy()[:, None, :]  # [P, 1, V]
    order = np.argsort(-z, -1)[..., :5]
    np.testing.assert_array_equal(got["top_ids"], order)
    np.testing.assert_allclose(got["top_probs"], np.exp(np.take_along_axis(logp, order, -1)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["log_norm"], lse, rtol=1e-5)
    np.testing.assert_allclose(got["entropy"], -(np.exp(logp) * logp).sum(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["kl"], (np.exp(q) * (q - logp)).sum(-1), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["target_ranks"], (z[..., None, :] > z[..., [3, 7]][..., None]).sum(-1))
    q_top1 = q[:, 0].argmax(-1)
    thr = np.take_along_axis(z, np.broadcast_to(q_top1[:, None, None], (P, rows, 1)), -1)
    np.testing.assert_array_equal(got["final_rank"], (z > thr).sum(-1))
    # the statistics' pass size (cache-sized on a CPU, the whole chunk on an accelerator) changes nothing
    for sub in (rows * V, 10**9):
        other = read_block(x, readout, top_k=5, target_ids=[3, 7], reference=Reference.from_logits(out_logits), chunk_elements=V * rows * 4, sub_block_elements=sub)
        for field, value in got.items():
            if value.dtype.kind in "iu":  # ids and ranks exactly; floats to float32 rounding (batched sums)
                np.testing.assert_array_equal(other[field], value, err_msg=f"{field} with {sub} logits per pass")
            else:
                np.testing.assert_allclose(other[field], value, rtol=1e-6, atol=1e-6, err_msg=f"{field} with {sub} logits per pass")
    known = read_block(x, readout, top_k=5, target_ids=[3, 7], known_logits=torch.from_numpy(z).float())
    for field in ("top_ids", "top_probs", "log_norm", "target_logits", "target_ranks", "entropy"):
        np.testing.assert_allclose(known[field], got[field], rtol=1e-5, atol=1e-6)


def test_model_output_that_differs_from_the_formula_is_reported(biased_model, monkeypatch):
    """The last row is the model's own output; if the formula the other rows use differs from it, that is
    reported (info) rather than hidden."""
    s = Session(biased_model)
    real_run = s._run

    def soft_capped(ids, past=None):
        logits, cache = real_run(ids, past)
        return 5 * torch.tanh(logits / 5), cache

    monkeypatch.setattr(s, "_run", soft_capped)
    a = s.analyze(TOKENS, top_k=5)
    with torch.no_grad():
        model_out = torch.softmax(5 * torch.tanh(biased_model(torch.tensor([TOKENS])).double() / 5), -1)[0]
    np.testing.assert_allclose(a.top_probs[-1], model_out.topk(5, -1).values.numpy(), rtol=REL_TOL, atol=1e-6)
    assert a.info["lens_vs_model_max_abs"] > 1e-3 and not a.info["lens_formula_matches_model"]
