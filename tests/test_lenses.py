"""Lenses beside the logit lens (issue 15): the Jacobian lens, the tuned lens, emergence rows.

Checked against independent computations: TransformerLens 4.3's own ``JacobianLens.fit`` and
``readout`` on a raw bridge of the same model (log-probabilities to 1e-4), the session's analysis
(analyses/lens.py) for the readout, and the model's own logits for the last row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from resid_widgets.lenses import (
    DEMO_LENS_FILES,
    NEVER,
    JacobianLens,
    Lens,
    LogitLens,
    TunedLens,
    collect_rows,
    emergence_rows,
    final_logits,
    fit_jacobian_lens,
    get_lens,
    kl_to_output,
    train_tuned_lens,
)
from resid_widgets.lenses.base import residual_rows

HELDOUT = Path(__file__).parent / "data" / "demo_heldout_tokens.npy"
TEXTS = [
    "Mr. and Mrs. Bennet had five daughters. It is a truth universally acknowledged. The capital of France is Paris.",
    "This is a sentence. This is another sentence. Step 1: add. Step 2: subtract. The capital of England is London.",
    "The capital of England is London. Mr. and Mrs. Bennet had five daughters. This is another sentence.",
    "Step 1: add. Step 2: subtract. It is a truth universally acknowledged. This is a sentence. Step 1: add.",
]


def _rows(session, text):
    ids, _ = session.to_token_ids(text)
    return residual_rows(session.model, torch.as_tensor(ids)[None])[:, 0]  # [R, T, d]


def _logprobs(model, vectors):
    with torch.inference_mode():
        return torch.log_softmax(final_logits(model, vectors), dim=-1)


@pytest.fixture(scope="module")
def raw_tiny(tiny_hf_dir):
    """The tiny GPT-2 booted raw (no compatibility mode): what TransformerLens's JacobianLens needs."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(str(tiny_hf_dir), device="cpu")
    bridge.eval()
    return bridge


@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory, tiny_hf_dir):
    """A random-weight Llama (RMSNorm) directory with the tiny GPT-2's tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny_llama")
    tok = AutoTokenizer.from_pretrained(tiny_hf_dir)
    tok.save_pretrained(out)
    cfg = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        model.model.norm.weight.add_(torch.randn(32) * 0.3)
    model.save_pretrained(out)
    return out


# ---- the logit lens and the identity -------------------------------------------------------------
def test_identity_jacobian_lens_is_the_logit_lens_exactly(biased_model):
    from resid_widgets import Session

    s = Session(biased_model)
    resid = _rows(s, [5, 17, 99, 3, 42, 7])
    logit, ident = LogitLens.for_model(s), JacobianLens.identity(s)
    assert ident.fitted_rows() == list(range(s.n_layers))
    assert torch.equal(logit.transform(resid), resid)
    assert torch.equal(ident.transform(resid), resid)
    with torch.inference_mode():
        ref = final_logits(s.model, logit.transform(resid))
        assert torch.equal(final_logits(s.model, ident.transform(resid)), ref)
        centred = final_logits(s.model, JacobianLens.identity(s, centre_input=True).transform(resid))
    torch.testing.assert_close(centred, ref, rtol=1e-5, atol=1e-5)


def test_final_readout_matches_the_session_analysis_and_the_model(biased_model):
    """final_logits (ln_final, W_U, b_U) of every row = the analysis's lens logits; of the last row = the model's."""
    from resid_widgets import Session

    s = Session(biased_model)
    ids = [5, 17, 99, 3, 42, 7]
    a = s.analyze(ids, top_k=5)
    resid = _rows(s, ids)
    with torch.inference_mode():
        logits = final_logits(s.model, LogitLens.for_model(s).transform(resid))  # [R, T, V]
    top = logits.topk(5, dim=-1)
    np.testing.assert_array_equal(top.indices.numpy(), a.top_ids)
    np.testing.assert_allclose(top.values.numpy(), a.top_logits, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():
        model_logits = s.model(torch.tensor([ids]))[0]
    torch.testing.assert_close(logits[-1], model_logits.float(), rtol=1e-4, atol=1e-4)


def test_every_lens_is_the_identity_at_the_last_row(demo_session):
    resid = _rows(demo_session, "Mr. and Mrs. Bennet had five daughters, and")
    with torch.inference_mode():
        ids, _ = demo_session.to_token_ids("Mr. and Mrs. Bennet had five daughters, and")
        model_logits = demo_session.model(torch.as_tensor(ids)[None])[0]
    for kind in ("logit", "jacobian", "tuned"):
        lens = get_lens(kind, demo_session)
        assert lens.kind == kind
        assert torch.equal(lens.transform_rows(resid[-1:], [-1])[0], resid[-1])
        assert torch.equal(lens.transform(resid)[-1], resid[-1])
        kl = kl_to_output(demo_session, resid, lens)
        assert kl.shape == (demo_session.n_layers + 1, resid.shape[1])
        assert np.all(kl[-1] == 0.0), kind
        assert np.all(kl[:-1].mean(1) > 1e-3), kind  # the earlier rows are not the output
        with torch.inference_mode():
            last = final_logits(demo_session.model, lens.transform(resid)[-1])
        torch.testing.assert_close(last, model_logits.float(), rtol=1e-4, atol=1e-4)


def test_transform_rows_reads_a_subset_and_rejects_bad_rows(demo_session):
    resid = _rows(demo_session, "She could not help")
    lens = get_lens("jacobian", demo_session)
    full = lens.transform(resid)
    torch.testing.assert_close(lens.transform_rows(resid[1:3], slice(1, 3)), full[1:3])
    torch.testing.assert_close(lens.transform_rows(resid[[3, 0]], [3, 0]), full[[3, 0]])
    torch.testing.assert_close(lens.transform_rows(resid[2:3], 2), full[2:3])
    with pytest.raises(IndexError, match="out of range"):
        lens.transform_rows(resid[:1], [7])
    with pytest.raises(ValueError, match="rows were named"):
        lens.transform_rows(resid[:2], [0])
    with pytest.raises(ValueError, match="transform_rows"):
        lens.transform(resid[:3])
    with pytest.raises(ValueError, match="d_model"):
        lens.transform(resid[..., :10])


# ---- the Jacobian lens against TransformerLens ---------------------------------------------------
def _tl_readout_logprobs(tl_lens, raw, text):
    out = tl_lens.readout(raw, text, return_full_logits=True, top_k=3)
    return {layer: torch.log_softmax(v.float(), -1) for layer, v in out.lens_logits.items()}


def test_our_fit_equals_transformer_lens_fit_on_a_layernorm_model(tiny_session, raw_tiny):
    """Same estimator: P J_ours = P J_TL (P centres; J 1 = 1 in both), and the readouts agree to 1e-4."""
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    kw = dict(max_seq_len=48, skip_first_positions=2, dim_batch=8)
    tl = TLJacobianLens.fit(raw_tiny, TEXTS, corpus="tests", show_progress=False, **kw)
    ours = fit_jacobian_lens(tiny_session, TEXTS, **kw)
    assert ours.info["n_prompts"] == tl.n_prompts == len(TEXTS)
    L, d = tiny_session.n_layers, tiny_session.d_model
    assert tl.source_layers == list(range(L - 1)) and ours.fitted_rows() == list(range(L))  # we also fit row 0
    P = torch.eye(d) - torch.full((d, d), 1.0 / d)
    ones = torch.ones(d)
    for layer in tl.source_layers:
        J_tl, J_ours = tl.jacobians[layer], ours.jacobians[layer + 1]
        assert float((J_ours - J_tl).abs().max()) > 1e-4  # the bases differ ...
        torch.testing.assert_close(P @ J_ours, P @ J_tl, rtol=0, atol=1e-5)  # ... only along the all-ones vector
        torch.testing.assert_close(J_tl @ ones, ones, rtol=0, atol=1e-5)
        torch.testing.assert_close(J_ours @ ones, ones, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.jacobians[0] @ ones, ones, rtol=0, atol=1e-5)

    # Readouts: TransformerLens's own readout on the raw bridge vs ours on the compatibility-mode rows.
    for text in TEXTS[:2]:
        ref = _tl_readout_logprobs(tl, raw_tiny, text)
        resid = _rows(tiny_session, text)
        for lens in (ours, JacobianLens.from_transformer_lens(tl, tiny_session)):
            mine = _logprobs(tiny_session.model, lens.transform(resid))
            for layer, lp in ref.items():
                torch.testing.assert_close(mine[layer + 1], lp, rtol=0, atol=1e-4)


def test_our_fit_equals_transformer_lens_fit_on_an_rmsnorm_model(tiny_llama_dir):
    """RMSNorm: compatibility mode leaves the rows as they are, so the matrices themselves agree."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    from resid_widgets import Session

    s = Session(str(tiny_llama_dir), device="cpu")
    assert s.info()["normalization"] == "RMS"
    raw = TransformerBridge.boot_transformers(str(tiny_llama_dir), device="cpu")
    raw.eval()
    kw = dict(max_seq_len=48, skip_first_positions=2, dim_batch=16)
    tl = TLJacobianLens.fit(raw, TEXTS[:3], corpus="tests", show_progress=False, **kw)
    ours = fit_jacobian_lens(s, TEXTS[:3], **kw)
    for layer in tl.source_layers:
        torch.testing.assert_close(ours.jacobians[layer + 1], tl.jacobians[layer], rtol=0, atol=1e-5)
    ref = _tl_readout_logprobs(tl, raw, TEXTS[3])
    mine = _logprobs(s.model, ours.transform(_rows(s, TEXTS[3])))
    for layer, lp in ref.items():
        torch.testing.assert_close(mine[layer + 1], lp, rtol=0, atol=1e-4)


def test_shipped_jacobian_lens_reads_like_transformer_lens_on_the_trained_demo_model(demo_session):
    """The trained demo model (non-zero LN biases folded into b_U): our readout of the shipped matrices on
    compatibility-mode rows = TransformerLens's readout of the same matrices on a raw bridge, to 1e-4."""
    from transformer_lens.model_bridge import TransformerBridge

    from resid_widgets.session.loading import DEMO_MODEL_DIR

    raw = TransformerBridge.boot_transformers(str(DEMO_MODEL_DIR), device="cpu")
    raw.eval()
    lens = get_lens("jacobian", demo_session)
    text = "It is a truth universally acknowledged, that a single man in possession of a good fortune"
    ref = _tl_readout_logprobs(lens.to_transformer_lens(), raw, text)
    mine = _logprobs(demo_session.model, lens.transform(_rows(demo_session, text)))
    assert sorted(ref) == list(range(demo_session.n_layers))
    for layer, lp in ref.items():
        torch.testing.assert_close(mine[layer + 1], lp, rtol=0, atol=1e-4)


def test_fit_validates_its_input(tiny_session):
    with pytest.raises(ValueError, match="too short"):
        fit_jacobian_lens(tiny_session, ["Step 1"], skip_first_positions=16)
    with pytest.raises(ValueError, match="non-empty list"):
        fit_jacobian_lens(tiny_session, [])
    with pytest.raises(ValueError, match="rows must be"):
        fit_jacobian_lens(tiny_session, TEXTS, rows=[tiny_session.n_layers])
    seen = []
    lens = fit_jacobian_lens(tiny_session, TEXTS[:2] + ["Step"], skip_first_positions=2, rows=[1],
                             progress=lambda f, stage: seen.append(f))
    assert lens.fitted_rows() == [1] and lens.info["n_prompts"] == 2 and lens.info["n_skipped"] == 1
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(2 / 3) and seen == sorted(seen)


# ---- files ---------------------------------------------------------------------------------------
def test_save_load_round_trip(tmp_path, tiny_session, raw_tiny):
    J = fit_jacobian_lens(tiny_session, TEXTS[:2], skip_first_positions=2, max_seq_len=32, dim_batch=32)
    tuned = train_tuned_lens(tiny_session, TEXTS, steps=3, seed=0)
    for lens in (J, tuned):
        exact, half = tmp_path / f"{lens.kind}32.safetensors", tmp_path / f"{lens.kind}.safetensors"
        lens.save(exact, dtype=torch.float32)
        lens.save(half)
        back = Lens.load(exact, session_or_model=tiny_session)
        assert type(back) is type(lens) and back.info == lens.info and back.fitted_rows() == lens.fitted_rows()
        for r in lens.fitted_rows():
            assert torch.equal(back.matrices[r], lens.matrices[r])
        assert set(back.offsets) == set(lens.offsets)
        back16 = type(lens).load(half, session_or_model=tiny_session)
        for r in lens.fitted_rows():
            torch.testing.assert_close(back16.matrices[r], lens.matrices[r], rtol=1e-3, atol=1e-3)
        assert half.stat().st_size < exact.stat().st_size
    with pytest.raises(ValueError, match="not a jacobian lens"):
        JacobianLens.load(tmp_path / "tuned.safetensors")
    # A lens for one model refuses another.
    with pytest.raises(ValueError, match="made for"):
        Lens.load(DEMO_LENS_FILES["jacobian"], session_or_model=tiny_session)
    (tmp_path / "junk.safetensors").write_bytes(b"not a lens")
    with pytest.raises(ValueError, match="not a resid_widgets lens"):
        Lens.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        Lens.load(tmp_path / "missing.safetensors")
    # A TransformerLens artifact (.pt) loads by path: its layer l is our row l + 1.
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    tl = TLJacobianLens.fit(raw_tiny, TEXTS[:2], corpus="tests", max_seq_len=32, skip_first_positions=2, show_progress=False)
    tl.save(str(tmp_path / "tl.pt"))
    from_pt = JacobianLens.load(tmp_path / "tl.pt", session_or_model=tiny_session)
    assert from_pt.fitted_rows() == [l + 1 for l in tl.source_layers]
    torch.testing.assert_close(from_pt.matrices[1], tl.jacobians[0].half().float())
    assert from_pt.info["corpus"] == "tests"


def test_get_lens(demo_session, tiny_session, tmp_path):
    assert get_lens("logit", demo_session).fitted_rows() == []
    for kind, cls in (("jacobian", JacobianLens), ("tuned", TunedLens)):
        lens = get_lens(kind, demo_session)
        assert isinstance(lens, cls) and lens.fitted_rows() == list(range(demo_session.n_layers))
        assert DEMO_LENS_FILES[kind].stat().st_size <= 300_000
        with pytest.raises(ValueError, match="fit_jacobian_lens|train_tuned_lens"):
            get_lens(kind, tiny_session)
    with pytest.raises(ValueError, match="unknown lens"):
        get_lens("tuning", demo_session)
    J = JacobianLens.identity(tiny_session)
    J.save(tmp_path / "j.safetensors")
    assert get_lens("jacobian", tiny_session, path=tmp_path / "j.safetensors").fitted_rows() == J.fitted_rows()


# ---- the tuned lens ------------------------------------------------------------------------------
def test_tuned_lens_training_reduces_its_loss_and_is_deterministic(tiny_session):
    rows = collect_rows(tiny_session, TEXTS)
    a = train_tuned_lens(tiny_session, TEXTS, steps=40, seed=3, lr=5e-3, batch_tokens=64, rows_cache=rows)
    b = train_tuned_lens(tiny_session, TEXTS, steps=40, seed=3, lr=5e-3, batch_tokens=64)  # rows computed itself
    assert a.losses[-1] < 0.5 * a.losses[0]
    assert a.info["loss_first"] == pytest.approx(a.losses[0], abs=1e-5)
    for r in a.fitted_rows():
        torch.testing.assert_close(a.matrices[r], b.matrices[r], rtol=0, atol=1e-6)
        torch.testing.assert_close(a.offsets[r], b.offsets[r], rtol=0, atol=1e-6)
    # On its training tokens the tuned lens beats the logit lens at every row but the last.
    kl_t = kl_to_output(tiny_session, rows, a).mean(1)
    kl_l = kl_to_output(tiny_session, rows, LogitLens.for_model(tiny_session)).mean(1)
    assert np.all(kl_t[:-1] < kl_l[:-1]) and kl_t[-1] == kl_l[-1] == 0.0
    with pytest.raises(ValueError, match="non-empty list of texts"):
        train_tuned_lens(tiny_session, [], steps=1, seed=0)
    with pytest.raises(ValueError, match="rows must be"):
        train_tuned_lens(tiny_session, None, steps=1, seed=0, rows_cache=rows[:2])


def test_lenses_ignore_a_rows_mean_on_layernorm_models(demo_session):
    """Fitted on centred rows; a row shifted along the all-ones vector (a raw, uncentred row) reads the same."""
    resid = _rows(demo_session, "Lady Catherine de")
    shifted = resid + torch.randn(resid.shape[:-1] + (1,), generator=torch.Generator().manual_seed(0)) * 3.0
    for kind in ("jacobian", "tuned"):
        lens = get_lens(kind, demo_session)
        assert lens.centre_input
        torch.testing.assert_close(_logprobs(demo_session.model, lens.transform(shifted)),
                                   _logprobs(demo_session.model, lens.transform(resid)), rtol=0, atol=1e-4)


# ---- held-out demo text --------------------------------------------------------------------------
def test_shipped_lenses_on_held_out_demo_text(demo_session):
    """Held-out windows (the demo model's validation split, unseen by the model and the lens fits):
    mean KL(model || lens) per row. The tuned lens beats the logit lens at every row but the last;
    the Jacobian lens beats it at the embeddings (see LENSES.md for the full table)."""
    windows = np.load(HELDOUT).astype(np.int64)
    assert windows.shape[1] == 128 and np.all(windows[:, 0] == demo_session.tokenizer.bos_token_id)
    rows = collect_rows(demo_session, list(windows))
    kl = {lens.kind: kl_to_output(demo_session, rows, lens).mean(1)
          for lens in (LogitLens.for_model(demo_session), get_lens("jacobian", demo_session), get_lens("tuned", demo_session))}
    for kind in kl:
        assert kl[kind][-1] == 0.0
    assert np.all(kl["tuned"][:-1] < kl["logit"][:-1]), kl
    assert kl["jacobian"][0] < 0.5 * kl["logit"][0], kl
    shipped = json.loads((DEMO_LENS_FILES["jacobian"].parent / "heldout_kl.json").read_text())["kl_nats"]
    for kind in kl:  # this subset of the held-out windows tells the same story as the shipped table
        np.testing.assert_allclose(kl[kind], shipped[kind]["mean"], rtol=0.35, atol=0.05)


# ---- emergence -----------------------------------------------------------------------------------
def test_emergence_rows_on_hand_made_arrays():
    # R = 4 rows, T = 3 positions, k = 2
    top = np.array([
        [[7, 1], [2, 3], [9, 8]],
        [[1, 7], [5, 6], [9, 4]],
        [[2, 7], [2, 6], [4, 9]],
        [[7, 2], [6, 2], [4, 5]],
    ])
    final = np.array([7, 2, 4])
    rows, targets = emergence_rows(top, final, [2, 9])
    # 7 at t=0: rows 0,1,2,3 -> 0; 2 at t=1: rows 0, 2, 3 (not 1) -> 2; 4 at t=2: rows 1, 2, 3 -> 1
    np.testing.assert_array_equal(rows, [0, 2, 1])
    # target 2: t=0 rows 2,3 -> 2; t=1 -> 2; t=2 never at the last row -> NEVER
    # target 9: t=0 never; t=1 never; t=2 rows 0,1,2 but not 3 -> NEVER
    np.testing.assert_array_equal(targets, [[2, NEVER], [2, NEVER], [NEVER, NEVER]])
    assert rows.dtype == np.int64 and targets.shape == (3, 2)
    # k=1 uses only the top-1 column: 7 at t=0 is top-1 at rows 0 and 3 only -> 3; 2 at t=1 is not top-1
    # at the last row -> NEVER; 4 at t=2 is top-1 at rows 2 and 3 -> 2
    rows1, none = emergence_rows(top, final, [], k=1)
    np.testing.assert_array_equal(rows1, [3, NEVER, 2])
    assert none.shape == (3, 0)
    with pytest.raises(ValueError, match="one id per position"):
        emergence_rows(top, [7, 2], [])
    with pytest.raises(ValueError, match="k must be"):
        emergence_rows(top, final, [], k=3)


def test_emergence_rows_against_a_loop_on_a_real_analysis(demo_session):
    a = demo_session.analyze("Mr. and Mrs. Bennet had five daughters, and", top_k=5, targets=[" Bennet", " the"])
    rows, targets = emergence_rows(a.top_ids, a.top_ids[-1, :, 0], a.target_ids)
    R, T, _ = a.top_ids.shape
    for t in range(T):
        for j, tok in enumerate([a.top_ids[-1, t, 0], *a.target_ids]):
            inside = [tok in a.top_ids[r, t] for r in range(R)]
            expect = next((r for r in range(R) if all(inside[r:])), NEVER)
            assert (rows[t] if j == 0 else targets[t, j - 1]) == expect
    assert np.all(rows >= 0)  # the final top-1 is always in the last row's top-k


# ---- the lens inside Session.analyze (the staged pipeline) ------------------------------------------
def test_session_identity_jacobian_lens_equals_the_logit_lens(biased_model):
    from resid_widgets import Session

    s = Session(biased_model)
    ids = [3, 14, 15, 92, 65, 35]
    plain = s.analyze(ids, top_k=5, targets=[7, 8])
    ident = Session(biased_model).analyze(ids, top_k=5, targets=[7, 8], lens=JacobianLens.identity(biased_model))
    assert ident.lens == "jacobian"
    for f in ("top_ids", "top_probs", "log_norm", "target_ranks", "entropy", "kl", "final_rank"):
        np.testing.assert_array_equal(getattr(ident, f), getattr(plain, f), err_msg=f)


@pytest.mark.parametrize("kind", ["logit", "jacobian", "tuned"])
def test_session_lens_readout_against_the_lens_and_the_model(demo_session, kind):
    """analyze(lens=kind): every row equals the lens's own transform read out by the model's final readout
    (float64 here), KL to the output is 0 on the last row, and KL/entropy match their definitions."""
    from resid_widgets import Session

    s = Session(demo_session.model)
    a = s.analyze("Mr. and Mrs. Bennet had five daughters", top_k=5, lens=kind)
    lens = get_lens(kind, s)
    with torch.no_grad():
        logp = torch.log_softmax(final_logits(s.model, lens.transform(torch.from_numpy(a.resid))).double(), -1)  # [R, T, V]
    q = logp[-1:]
    np.testing.assert_allclose(np.log(a.top_probs), logp.topk(5, -1).values.numpy(), rtol=1e-4, atol=2e-4)
    # float32 readout: KL is a difference of terms of the logits' size (hundreds at BOS), so 1e-3 nats
    np.testing.assert_allclose(a.kl, (q.exp() * (q - logp)).sum(-1).numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a.entropy, -(logp.exp() * logp).sum(-1).numpy(), rtol=1e-3, atol=2e-4)
    assert np.abs(a.kl[-1]).max() == 0.0


def test_switching_lenses_reuses_the_forward_pass(demo_session, monkeypatch):
    from resid_widgets import Session

    s = Session(demo_session.model)
    p = "It is a truth universally acknowledged"
    s.analyze(p, lens="logit")
    s.analyze(p, lens="logit")  # the session's first prefix reuse is checked once against a full pass
    calls = []
    real = s._run
    monkeypatch.setattr(s, "_run", lambda ids, past=None: calls.append(ids.shape[1]) or real(ids, past))
    tuned = s.analyze(p, lens="tuned")
    assert calls == [1]  # the same prompt: one position re-run on the cached prefix, every lens cell re-read
    fresh = Session(demo_session.model).analyze(p, lens="tuned")
    np.testing.assert_allclose(tuned.top_probs, fresh.top_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(tuned.top_ids, fresh.top_ids)
