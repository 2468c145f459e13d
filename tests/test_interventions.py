"""Interventions (resid_widgets.interventions): directions, steering, ablation, patching, continuations.

Oracles: the plain analysis (bit for bit where nothing changes), TransformerLens's own ``run_with_hooks``
and ``patching.get_act_patch_resid_pre``, Hugging Face forward pre-hooks on the unprocessed model, numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from families import build_family_dir
from resid_widgets import Session
from resid_widgets.interventions import (
    Ablate,
    AblateHead,
    AblateMLP,
    Direction,
    Steer,
    contrast_direction,
    jacobian_direction,
    patch_resid,
    patching_experiment,
    task_vector_direction,
    unembed_direction,
)

PROMPT = "Mr. Darcy said to Elizabeth that she"
FIELDS = ["top_ids", "top_probs", "top_logits", "log_norm", "target_ranks", "target_logits", "entropy", "kl_to_output",
          "projection_pct", "resid_norm", "attn_norm", "mlp_norm", "_resid"]


def assert_bit_equal(a, b):
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def fresh(s: Session, prompt=PROMPT, **kw):
    """An analysis with no earlier run to reuse (the full forward pass)."""
    s._last = None
    return s.analyze(prompt, **kw)


@pytest.fixture(scope="module")
def bennet(demo_session):
    return unembed_direction(demo_session, " Bennet")


# ---- steering and the baseline --------------------------------------------------------------------
def test_alpha_zero_and_off_equal_the_plain_analysis_bit_for_bit(demo_session, bennet):
    s = demo_session
    plain = fresh(s, targets=[" Bennet"])
    assert_bit_equal(fresh(s, targets=[" Bennet"], intervention=Steer(bennet, [1], 0.0)), plain)
    assert_bit_equal(fresh(s, targets=[" Bennet"], intervention=None), plain)
    assert_bit_equal(fresh(s, targets=[" Bennet"], intervention=[]), plain)
    # the comparison can fail: a tiny alpha changes the numbers
    tiny = fresh(s, targets=[" Bennet"], intervention=Steer(bennet, [1], 1e-3))
    assert not np.array_equal(tiny._resid, plain._resid)
    np.testing.assert_array_equal(tiny._resid[:2], plain._resid[:2])  # rows before the steered one


def test_a_plain_analysis_after_an_intervention_is_bit_equal_to_one_before(demo_session, bennet):
    s = demo_session
    before = fresh(s, targets=[" Bennet"])
    for iv in [Steer(bennet, [1, 2], 6.0), Steer(bennet, [0], 2.0, norm_match=True), Ablate(bennet, [1, 3]),
               AblateHead(1, 2), AblateHead(2, 0, "mean"), AblateMLP(0), AblateMLP(3, "mean"), [AblateMLP(1), Steer(bennet, 2, 3.0)]]:
        steered = s.analyze(PROMPT, targets=[" Bennet"], intervention=iv)
        assert not np.array_equal(steered.top_logits, before.top_logits), iv
        assert all(not hp.fwd_hooks for hp in s.model.hook_dict.values())  # no hook is left on the model
        assert_bit_equal(s.analyze(PROMPT, targets=[" Bennet"]), before)  # same prompt: a full pass again


def test_prefix_reuse_is_keyed_on_the_intervention(demo_session, bennet):
    s = demo_session
    ids, _ = s.to_token_ids(PROMPT)
    T, k = len(ids), 5
    edited = list(ids[:-1]) + [int(s.resolve_targets([" Bennet"])[1][0])]
    plain = fresh(s, edited, targets=[" Bennet"])
    steer = Steer(bennet, [1], 8.0, positions=[k])
    # a plain edit after a steered run reuses only the positions before the steered one
    fresh(s, PROMPT, intervention=steer)
    runs = []
    real = s._run
    s._run = lambda ids, past=None, *a: runs.append((ids.shape[1], 0 if past is None else past.get_seq_length())) or real(ids, past, *a)
    try:
        after = s.analyze(edited, targets=[" Bennet"])
        assert runs[0] == (T - k, k)
        np.testing.assert_allclose(after._resid, plain._resid, rtol=1e-5, atol=1e-5)
        # bit for bit what the same reuse gives after a different intervention at the same position
        fresh(s, PROMPT, intervention=Steer(bennet, [2], -3.0, positions=[k]))
        assert_bit_equal(s.analyze(edited, targets=[" Bennet"]), after)
        # a steered edit after a plain run: the steered position and everything after it are recomputed
        runs.clear()
        fresh(s, PROMPT)
        steered_edit = s.analyze(edited, targets=[" Bennet"], intervention=steer)
        assert runs[-1] == (T - k, k)
        full = fresh(s, edited, targets=[" Bennet"], intervention=steer)
        np.testing.assert_allclose(steered_edit._resid, full._resid, rtol=1e-5, atol=1e-5)
        # the same intervention on an edit: prefix up to the edit; a norm-matched one (couples positions): none
        runs.clear()
        s.analyze(PROMPT, intervention=steer)
        s.analyze(edited, intervention=steer)
        assert runs[-1] == (1, T - 1)
        s.analyze(PROMPT, intervention=Steer(bennet, [1], 1.0, norm_match=True))
        s.analyze(edited, intervention=Steer(bennet, [1], 1.0, norm_match=True))
        assert runs[-1][1] == 0
    finally:
        s._run = real


def test_streaming_and_cancellation_under_an_intervention(demo_session, bennet):
    from resid_widgets.analyses.pipeline import Cancelled

    s = demo_session
    steer = Steer(bennet, [1], 4.0)
    whole = fresh(s, lens="jacobian", intervention=steer)
    s._last = None
    updates = list(s.stream(PROMPT, lens="jacobian", view=(3, 6), intervention=steer))
    assert [u.stage for u in updates][0] == "begin" and updates[-1].stage == "done" and len(updates) > 2
    for f in FIELDS:  # the positions in view are read first (other blocks: equal up to rounding)
        np.testing.assert_allclose(getattr(updates[-1].analysis, f), getattr(whole, f), rtol=1e-5, atol=1e-5, err_msg=f)
    assert updates[-1].analysis.lens == "jacobian" and updates[-1].analysis.info["intervention"]["alpha"] == 4.0
    assert not np.allclose(updates[-1].analysis.top_logits, fresh(s, lens="jacobian").top_logits, atol=1e-3)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        for _ in s.stream(PROMPT, intervention=steer, cancelled=lambda: next(calls) >= 2):
            pass
    assert all(not hp.fwd_hooks for hp in s.model.hook_dict.values())
    assert_bit_equal(fresh(s, lens="jacobian", intervention=steer), whole)


def test_steering_a_tokens_unembedding_raises_its_rank_at_every_later_row(demo_session, bennet):
    s = demo_session
    layer = 1  # of 4: rows 2..4 come after it
    before = fresh(s, targets=[" Bennet"]).target_ranks[..., 0]
    after = fresh(s, targets=[" Bennet"], intervention=Steer(bennet, [layer], 8.0)).target_ranks[..., 0]
    np.testing.assert_array_equal(after[: layer + 1], before[: layer + 1])
    later_b, later_a = before[layer + 1 :], after[layer + 1 :]
    assert (later_a <= later_b).all()
    assert (later_a[later_b > 0] < later_b[later_b > 0]).all()


def test_steer_adds_alpha_v_and_norm_match_scales_by_the_median_norm(demo_session, bennet):
    s = demo_session
    plain = fresh(s)
    r = 3  # row of layer 2's resid_post; steering only layer 2 leaves the rows before it alone
    raw = fresh(s, intervention=Steer(bennet, [2], 2.5, positions=[1, 4]))
    delta = raw._resid[r] - plain._resid[r]
    expected = np.zeros_like(delta)
    expected[[1, 4]] = 2.5 * bennet.vector.numpy()
    np.testing.assert_allclose(delta, expected, atol=2e-5)
    nm = fresh(s, intervention=Steer(bennet, [2], 0.5, norm_match=True))
    med = np.median(np.linalg.norm(plain._resid[r].astype(np.float64), axis=-1))
    np.testing.assert_allclose(nm._resid[r] - plain._resid[r], np.broadcast_to(0.5 * med * bennet.unit.numpy(), delta.shape), atol=5e-5)
    assert nm.info["intervention"]["norm_match"] is True


def test_ablation_leaves_no_component_along_v(demo_session, bennet):
    s = demo_session
    layers = [0, 2]
    a = fresh(s, intervention=Ablate(bennet, layers))
    u = bennet.unit.numpy().astype(np.float64)
    for l in layers:
        h = a._resid[l + 1].astype(np.float64)
        cos = np.abs(h @ u) / np.linalg.norm(h, axis=-1)
        assert cos.max() < 1e-6
    h = fresh(s)._resid[1].astype(np.float64)
    assert (np.abs(h @ u) / np.linalg.norm(h, axis=-1)).max() > 1e-3  # there was something to remove


def test_head_and_mlp_ablation_equal_transformer_lens_run_with_hooks(demo_session):
    s = demo_session
    ids = torch.as_tensor(s.to_token_ids(PROMPT)[0])[None]

    def zero_head(h):
        def fn(z, hook):
            z = z.clone()
            z[:, :, h] = 0.0
            return z
        return fn

    for iv, hooks in [
        (AblateHead(1, 2), [("blocks.1.attn.hook_z", zero_head(2))]),
        (AblateMLP(2), [("blocks.2.hook_mlp_out", lambda x, hook: torch.zeros_like(x))]),
    ]:
        with torch.inference_mode():
            tl = s.model.run_with_hooks(ids, fwd_hooks=hooks)[0].float()
        a = fresh(s, intervention=iv, top_k=5)
        np.testing.assert_allclose(a.top_logits[-1], torch.topk(tl, 5).values.numpy(), rtol=0, atol=1e-5)
        assert not np.allclose(a.top_logits[-1], fresh(s, top_k=5).top_logits[-1], atol=1e-3)


def test_head_ablation_equals_zeroing_the_heads_input_to_the_output_projection_in_hugging_face(demo_session):
    """An independent oracle: the unprocessed Hugging Face model, head 2 of layer 1's input to c_proj replaced.

    Compatibility mode folds each head's value bias (b_V, and ln_1's beta through W_V) into b_O, as
    TransformerLens's ``fold_value_biases`` does, so a zeroed ``hook_z`` still writes that bias: in the
    unprocessed model the head's z becomes ``beta W_V + b_V`` (attention rows sum to 1), not 0."""
    from transformers import AutoModelForCausalLM

    from resid_widgets.session.loading import DEMO_MODEL_DIR

    s = demo_session
    hf = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32).eval()
    d_head = hf.config.n_embd // hf.config.n_head

    block, d = hf.transformer.h[1], hf.config.n_embd
    head = slice(2 * d + 2 * d_head, 2 * d + 3 * d_head)  # head 2's columns of V in c_attn
    value_bias = (block.ln_1.bias @ block.attn.c_attn.weight[:, head] + block.attn.c_attn.bias[head]).detach()

    def pre(mod, args):
        x = args[0].clone()
        x[..., 2 * d_head : 3 * d_head] = value_bias
        return (x,)

    handle = block.attn.c_proj.register_forward_pre_hook(pre)
    ids = s.to_token_ids(PROMPT)[0]
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.as_tensor(ids)[None]).logits[0].double(), -1).numpy()
    handle.remove()
    a = fresh(s, intervention=AblateHead(1, 2), top_k=3)
    got = np.log(a.top_probs[-1].astype(np.float64))
    np.testing.assert_allclose(got, np.take_along_axis(ref, a.top_ids[-1], -1), atol=1e-4)


# ---- directions ----------------------------------------------------------------------------------
def test_directions_round_trip_and_match_their_formulas(demo_session, tmp_path):
    s = demo_session
    t = s.resolve_targets([" Darcy"])[1][0]
    u = unembed_direction(s, " Darcy")
    np.testing.assert_array_equal(u.vector.numpy(), s.model.W_U[:, t].detach().numpy())
    lens = s._resolve_lens("jacobian")
    j = jacobian_direction(s, " Darcy", 1)
    J = lens.matrices[2].double()
    ref = (J.T @ s.model.W_U[:, t].detach().double()).numpy()
    ref = ref - ref.mean() if lens.centre_input else ref
    np.testing.assert_allclose(j.vector.numpy(), ref, rtol=1e-5, atol=1e-6)
    c = contrast_direction(s, ["Mr. Bennet", "Mrs. Bennet"], ["Mr. Darcy"], 1)
    rows = lambda p: fresh(s, p)._resid[2, -1].astype(np.float64)  # noqa: E731
    np.testing.assert_allclose(c.vector.numpy(), (rows("Mr. Bennet") + rows("Mrs. Bennet")) / 2 - rows("Mr. Darcy"), atol=1e-4)
    from resid_widgets.analyses.task_vectors import compute_task_vectors

    tv = compute_task_vectors(s, ["Mr. Bennet", "Mrs. Bennet", "Mr. Darcy"], ["B", "B", "D"])
    d = task_vector_direction(tv, "B", 1)
    np.testing.assert_allclose(d.vector.numpy(), tv.vectors[:2, 2].mean(0), atol=1e-6)
    for x in (u, j, c, d, Direction.from_tensor([1.0, 2.0, 3.0], "mine", layer=2, note="x")):
        path = x.save(tmp_path / f"{x.source}.safetensors")
        y = Direction.load(path)
        np.testing.assert_array_equal(y.vector.numpy(), x.vector.numpy())
        assert (y.name, y.source, y.layer, y.meta) == (x.name, x.source, x.layer, x.meta)


def test_bad_input_gets_clear_errors(demo_session, bennet, tmp_path):
    s = demo_session
    with pytest.raises(ValueError, match="width 7.*d_model 128"):
        s.analyze(PROMPT, intervention=Steer(torch.ones(7), [1], 1.0))
    with pytest.raises(ValueError, match="non-finite.*indices \\[3\\]"):
        Steer(np.r_[1.0, 2.0, 3.0, np.nan], [1], 1.0)
    with pytest.raises(ValueError, match="zero"):
        Ablate(np.zeros(128), [1])
    with pytest.raises(ValueError, match="layer 4 is out of range.*4 layers"):
        s.analyze(PROMPT, intervention=Steer(bennet, [4], 1.0))
    with pytest.raises(ValueError, match="position 40 is out of range"):
        s.analyze(PROMPT, intervention=Steer(bennet, [1], 1.0, positions=[40]))
    for a in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="alpha must be finite"):
            Steer(bennet, [1], a)
    with pytest.raises(ValueError, match="head 9 is out of range"):
        s.analyze(PROMPT, intervention=AblateHead(1, 9))
    with pytest.raises(ValueError, match="mode"):
        AblateMLP(1, "half")
    with pytest.raises(TypeError, match="intervention must be"):
        s.analyze(PROMPT, intervention="steer")
    with pytest.raises(ValueError, match="clean prompt is 5 tokens and the corrupted prompt 6 tokens"):
        patch_resid(s, "Mr. Darcy said", "Mr. Darcy said to", " Darcy", " Bennet")
    (tmp_path / "x.safetensors").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a direction file"):
        Direction.load(tmp_path / "x.safetensors")
    # nothing leaked from the failed calls
    assert all(not hp.fwd_hooks for hp in s.model.hook_dict.values())


# ---- continuations ---------------------------------------------------------------------------------
def test_continuations_before_and_after(demo_session, bennet):
    s = demo_session
    before = s.continue_text(PROMPT, 8)
    assert before.text == s.continue_text(PROMPT, 8, intervention=Steer(bennet, [1], 0.0)).text
    after = s.continue_text(PROMPT, 8, intervention=Steer(bennet, [1], 8.0))
    assert " Bennet" in after.text and " Bennet" not in before.text
    ids, _ = s.to_token_ids(PROMPT)
    with torch.inference_mode():
        first = int(s.model(torch.as_tensor(ids)[None])[0, -1].argmax())
    assert int(before.ids[0]) == first and len(before.ids) == 8
    assert before.text == s.tokenizer.decode(before.ids.tolist())


# ---- activation patching ---------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["gpt2", "llama", "pythia"])
def family_session(request, tmp_path_factory):
    return request.param, Session(str(build_family_dir(request.param, tmp_path_factory.mktemp(request.param))), device="cpu")


def test_patching_equals_transformer_lens(family_session):
    from transformer_lens import patching

    name, s = family_session
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(3, s.d_vocab, (9,), generator=g)
    corrupted = clean.clone()
    corrupted[[2, 5]] = torch.tensor([11, 12])
    ans, cf = 40, 41
    with torch.inference_mode():
        clean_logits, clean_cache = s.model.run_with_cache(clean[None])
        corr_logits = s.model(corrupted[None])
    ld = lambda z: z[0, -1, ans] - z[0, -1, cf]  # noqa: E731
    c, k = ld(clean_logits), ld(corr_logits)
    with torch.inference_mode():
        ref = patching.get_act_patch_resid_pre(s.model, corrupted[None], clean_cache, lambda z: (ld(z) - k) / (c - k))
    result = patching_experiment(s, clean.tolist(), corrupted.tolist(), ans, cf)
    assert result.info["method"] == "replay", result.info
    assert result.scores.shape == (s.n_layers, 9)
    np.testing.assert_allclose(result.scores, ref.numpy(), atol=1e-4, rtol=0)
    # layer 0 (the embeddings): patching a position where both prompts have the same token changes nothing
    np.testing.assert_allclose(result.scores[0, [0, 1, 3, 4]], 0.0, atol=1e-5)
    assert np.abs(result.scores).max() > 0.1
    hooked = patching_experiment(s, clean.tolist(), corrupted.tolist(), ans, cf, method="hooks")
    np.testing.assert_allclose(hooked.scores, ref.numpy(), atol=1e-4, rtol=0)
    assert (result.clean_ld, result.corrupted_ld) == pytest.approx((float(c), float(k)), abs=1e-4)


# ---- PatchingWidget --------------------------------------------------------------------------------
def test_patching_widget_draws_the_experiments_numbers_and_keeps_them_on_bad_input(demo_session):
    from resid_widgets import PatchingWidget
    from resid_widgets.widgets.patching import column_labels

    clean, corrupted = "Mr. Darcy said to Elizabeth", "Mr. Bennet said to Elizabeth"
    w = PatchingWidget(demo_session, clean, corrupted, " Darcy", " Bennet")
    ref = patching_experiment(demo_session, clean, corrupted, " Darcy", " Bennet", method="hooks")
    L, T = ref.scores.shape
    np.testing.assert_allclose(np.asarray(w.heat.color), ref.scores, atol=1e-5)
    assert list(w.heat.row) == ["embeddings"] + [f"after layer {l}" for l in range(L - 1)]  # layer l's input = row l
    assert w.figures == {"patching": w.figure}
    cols = list(w.heat.column)
    assert len(cols) == T and cols == column_labels(ref)
    diff = [p for p in range(T) if ref.clean_tokens[p] != ref.corrupted_tokens[p]]
    assert diff and all("→" in cols[p] for p in diff) and all("→" not in cols[p] for p in range(T) if p not in diff)
    assert "Darcy" in cols[diff[0]] and "Bennet" in cols[diff[0]]  # both runs' tokens where they differ
    assert list(w.text.text) == [f"{v:.2f}" for v in w.heat.color.ravel()]
    assert w.color_scale.min == -w.color_scale.max >= -max(1.0, np.abs(ref.scores).max()) - 1e-9
    assert f"clean {ref.clean_ld:.3f}" in w.summary.value and f"corrupted {ref.corrupted_ld:.3f}" in w.summary.value
    assert w.status.value == ""
    # bad input: a clear error in the widget, the previous heatmap kept
    before = np.asarray(w.heat.color).copy()
    w.corrupted_box.value = "Mr. Bennet said to Elizabeth Bennet"
    w.button.click()
    assert "tokens" in w.status.value and "same token length" in w.status.value
    np.testing.assert_array_equal(np.asarray(w.heat.color), before)
    w.corrupted_box.value = corrupted
    w.answer_box.value = " Bennet"  # answer == counterfactual
    w.button.click()
    assert "same token" in w.status.value
    w.answer_box.value = " Darcy"
    w.button.click()
    assert w.status.value == ""


# ---- SteeringWidget --------------------------------------------------------------------------------
def test_steering_widget_shows_before_after_and_difference(demo_session):
    from resid_widgets import SteeringWidget

    s = demo_session
    prompt = "It was a fine morning, and"
    w = SteeringWidget(s, prompt, " Weston", layers=(2,), alpha=0.5, norm_match=True, n_new=4)
    assert w.status.value == ""
    weston = unembed_direction(s, " Weston")
    steer = Steer(weston, [2], 0.5, norm_match=True)
    before = np.log(s.analyze(prompt, targets=[" Weston"]).target_probs[..., 0].astype(np.float64))
    after = np.log(s.analyze(prompt, targets=[" Weston"], intervention=steer).target_probs[..., 0].astype(np.float64))
    np.testing.assert_allclose(np.asarray(w.heat.color), after - before, atol=1e-5)  # the default view: difference
    assert (np.asarray(w.heat.color)[:3] == 0).all() and np.asarray(w.heat.color)[3:].max() > 1.0  # rows after layer 2 only
    assert list(w.heat.row) == ["embeddings"] + [f"after layer {l}" for l in range(4)] and len(w.heat.column) == len(w.before.tokens)
    w.view.value = "after"
    np.testing.assert_allclose(np.asarray(w.heat.color), after, atol=1e-5)
    w.view.value = "before"
    np.testing.assert_allclose(np.asarray(w.heat.color), before, atol=1e-5)
    assert w.before_text.value == s.continue_text(prompt, 4).text
    assert w.after_text.value == s.continue_text(prompt, 4, intervention=steer).text and "Weston" in w.after_text.value
    w.on.value = False  # steering off: after equals before, bit for bit
    np.testing.assert_array_equal(w.data()["after"], w.data()["before"])
    assert w.after_text.value == w.before_text.value
    w.on.value = True
    shown = np.asarray(w.heat.color).copy()
    w.token_box.value = " Weston Elton"  # not one token: the error is shown, the picture kept
    assert "single token" in w.status.value or "tokens" in w.status.value
    np.testing.assert_array_equal(np.asarray(w.heat.color), shown)
    w.token_box.value = " Weston"
    w.positions_box.value = "0, 99"
    assert "position 99 is out of range" in w.status.value
    w.positions_box.value = "-1"
    assert w.status.value == ""
    assert w.data()["intervention"]["positions"] == [-1]
