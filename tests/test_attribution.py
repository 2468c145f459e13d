"""Residual decomposition and direct logit attribution (``resid_widgets.analyses.attribution``) checked against
TransformerLens's own ``ActivationCache`` methods on every family of the conformance suite, against a torch
computation from Hugging Face hidden states and weights (GPT-2, Llama), and against the residual itself.

Tolerance: 1e-4 relative to the largest magnitude compared (float32 throughout). The module prints the largest
error per family and check at the end (the README's attribution table).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import native_bridge
from families import FAMILIES, PROBE_IDS, build_family_dir

TOL = 1e-4
TARGET, CF = 17, 256
SANDWICH = {"gemma2", "gemma3", "olmo2"}  # sublayer outputs are normalised before they join the residual
ERRORS: dict[str, dict[str, float]] = {}


def _np(x) -> np.ndarray:
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)


def rel(a, b) -> float:
    a, b = _np(a), _np(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def record(key: str, check: str, err: float) -> float:
    ERRORS.setdefault(key, {})[check] = max(err, ERRORS.get(key, {}).get(check, 0.0))
    return err


class Fam:
    def __init__(self, key: str, path):
        from resid_widgets import Session
        from resid_widgets.session.attribution import AttributionRun

        self.key, self.path = key, path
        self.session = Session(str(path), device="cpu")
        self.model = self.session.model
        self.run = AttributionRun(self.session, PROBE_IDS, neuron_positions=[-1, 5])
        with torch.no_grad():
            _, self.cache = self.model.run_with_cache(torch.tensor([PROBE_IDS]))
        self.L = self.session.n_layers


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module", params=list(FAMILIES))
def fam(request, tmp_path_factory):
    key = request.param
    return Fam(key, build_family_dir(FAMILIES[key], tmp_path_factory.mktemp(key)))


@pytest.fixture(scope="module", autouse=True)
def _print_table():
    yield
    if ERRORS:
        checks = sorted({c for v in ERRORS.values() for c in v})
        print("\n| family | " + " | ".join(checks) + " |\n|---|" + "---|" * len(checks))
        for key, v in ERRORS.items():
            print(f"| {FAMILIES[key].name} | " + " | ".join(f"{v[c]:.1e}" if c in v else "—" for c in checks) + " |")


def _tl_stack(dec) -> torch.Tensor:
    """Our [W, P, d] vectors as a TransformerLens stack [W, batch=1, P, d]."""
    return torch.from_numpy(dec.vectors)[:, None]


# ---- the writers sum to the residual ------------------------------------------------------------------------
def test_writers_sum_to_the_residual(fam):
    for row in range(fam.L + 1):
        for granularity in ("heads", "layers"):
            dec = fam.run.decompose(row=row, granularity=granularity)
            assert record(fam.key, "sum = residual", dec.error) <= TOL, (row, granularity)
    att = fam.run.dla(TARGET, CF)
    assert att.checks["holds"], att.checks
    assert record(fam.key, "Σ dla + const = lens", att.checks["logit"]) <= TOL


def test_grouped_query_heads_name_their_kv_group(fam):
    """Qwen2, Llama, Mistral, Gemma, OLMo-2 here have 2 K/V heads for 4 query heads: heads 0, 1 read group 0."""
    H = fam.model.cfg.n_heads
    n_kv = FAMILIES[fam.key].config.get("num_key_value_heads", H)
    assert fam.run.dla(TARGET, CF).kv_group.tolist() == [h // (H // n_kv) for h in range(H)]


def test_layers_equal_tl_decompose_resid(fam):
    for row in (1, fam.L):
        dec = fam.run.decompose(row=row, granularity="layers")
        tl, labels = fam.cache.decompose_resid(layer=row, return_labels=True)
        assert dec.labels == labels
        assert record(fam.key, "decompose_resid", rel(dec.vectors, tl[:, 0])) <= TOL


def test_heads_equal_tl_stack_head_results(fam):
    """Non-sandwich families: our head writers are TransformerLens's head results. Sandwich families
    (Gemma-2/3, OLMo-2): TL's results are the heads' output *before* the post-attention norm, which is not what
    reaches the residual; ours are exactly those times gamma / s_post (the norm's forward scale, frozen)."""
    dec = fam.run.decompose()
    tl, labels = fam.cache.stack_head_results(layer=-1, return_labels=True)
    tl = tl[:, 0]  # [L*H, T, d]
    H = fam.model.cfg.n_heads
    if fam.key in SANDWICH:
        from resid_widgets.session.attribution import norm_affine

        parts = []
        for l in range(fam.L):
            gamma, _ = norm_affine(fam.model.blocks[l].ln1_post, tl.shape[-1])
            s = fam.cache[f"blocks.{l}.ln1_post.hook_scale"][0]  # [T, 1]
            parts.append(tl[l * H : (l + 1) * H] * gamma / s)
        tl = torch.cat(parts)
    assert dec.labels[: len(labels)] == labels
    assert record(fam.key, "stack_head_results", rel(dec.vectors[: len(labels)], tl)) <= TOL


def test_full_decomposition_equals_tl(fam):
    dec = fam.run.decompose()
    tl, labels = fam.cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    assert dec.labels == labels
    tl = tl[:, 0].numpy()
    final = fam.cache[f"blocks.{fam.L - 1}.hook_resid_post"][0].numpy()
    if fam.key in SANDWICH:  # TL's heads and bias skip the post-attention norm: they do not sum to the residual
        assert rel(tl.sum(0), final) > 1e-2
        same = [i for i, lab in enumerate(labels) if not lab.startswith("L") and lab != "bias"]
        assert record(fam.key, "get_full_resid_decomposition", rel(dec.vectors[same], tl[same])) <= TOL
    else:
        assert record(fam.key, "get_full_resid_decomposition", rel(dec.vectors, tl)) <= TOL


def test_dla_equals_tl_logit_attrs(fam):
    """``logit_attrs`` applies the final norm's cached scale itself, so it gets the *unscaled* stack. OLMo-2's
    compatibility mode does not fold the final norm's weight into W_U, so there TL's ``apply_ln_to_stack`` is
    dotted with gamma * (W_U[:, target] - W_U[:, cf]) instead."""
    att = fam.run.dla(TARGET, CF)
    dec = fam.run.decompose()
    assert att.labels == dec.labels
    if fam.key == "olmo2":
        gamma = fam.run.weights.final_gamma
        d = (fam.model.W_U[:, TARGET] - fam.model.W_U[:, CF]) * gamma
        tl = (fam.cache.apply_ln_to_stack(_tl_stack(dec), layer=-1) * d).sum(-1)[:, 0]
    elif fam.key in SANDWICH:
        tl = fam.cache.logit_attrs(_tl_stack(dec), TARGET, CF)[:, 0]
    else:
        stack = fam.cache.get_full_resid_decomposition(expand_neurons=False)
        tl = fam.cache.logit_attrs(stack, TARGET, CF)[:, 0]
    assert record(fam.key, "logit_attrs", rel(att.values, tl.detach().numpy())) <= TOL


def test_dla_rows_sum_to_tl_accumulated_resid(fam):
    """At every row the attributions plus the constant equal the lens of that row: TL's
    ``accumulated_resid(apply_ln=True)`` (final norm recomputed per row) read out with W_U and b_U."""
    acc = fam.cache.accumulated_resid(layer=-1, apply_ln=True)[:, 0]  # [R, T, d]
    W_U, b_U = fam.model.W_U, getattr(fam.model, "b_U", None)
    lens = acc @ (W_U[:, TARGET] - W_U[:, CF]) + (0 if b_U is None else b_U[TARGET] - b_U[CF])
    for row in range(fam.L + 1):
        att = fam.run.dla(TARGET, CF, row=row)
        err = np.abs(att.values.sum(0) + att.constant - lens[row].numpy()).max() / max(1.0, float(lens[row].abs().max()))
        assert record(fam.key, "Σ dla vs accumulated_resid", err) <= TOL, row


def test_neurons_equal_tl_stack_neuron_results(fam):
    """Neuron attributions against TL's ``stack_neuron_results(apply_ln=True, project_output_onto=...)``
    (TL folds the projection in before expanding neurons, as we do). Sandwich families: TL's neuron results skip
    the post-MLP norm, so the projection gets gamma_post and the result is divided by s_post."""
    pos = [5, len(PROBE_IDS) - 1]
    nd = fam.run.neurons(TARGET, CF, positions=pos)
    assert record(fam.key, "neurons sum to MLP", nd.error) <= TOL
    w = fam.run.weights
    p = (fam.model.W_U[:, TARGET] - fam.model.W_U[:, CF]) * w.final_gamma
    for i, t in enumerate(pos):
        for l in range(fam.L):
            if fam.key in SANDWICH:
                gamma = w.mlp_post_gamma[l]
                tl = fam.cache.get_neuron_results(l, pos_slice=t, project_output_onto=p * gamma)[0]
                tl = tl / fam.cache[f"blocks.{l}.ln2_post.hook_scale"][0, t] / fam.run.writers.row_scale[-1][t]
            else:  # every layer's neurons, scaled by the final norm's cached scale
                tl = fam.cache.stack_neuron_results(-1, pos_slice=t, apply_ln=True, project_output_onto=p)
                tl = tl.reshape(fam.L, -1)[l]
            assert record(fam.key, "stack_neuron_results", rel(nd.values[l, i], tl.detach().numpy())) <= TOL


# ---- against Hugging Face, by hand ---------------------------------------------------------------------------
def _hf_parts(path, family: str):
    """From the HF model alone: every head's output (z_h @ W_O_h with its value bias moved to ``bias``), each
    MLP's output, the embeddings, the summed biases, and the final norm's input, as float64 torch [.., T, d]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    ids = torch.tensor([PROBE_IDS])
    layers = model.transformer.h if family == "gpt2" else model.model.layers
    z_in, mlp, final = {}, {}, []
    handles = []
    for l, block in enumerate(layers):
        o_proj = block.attn.c_proj if family == "gpt2" else block.self_attn.o_proj
        handles.append(o_proj.register_forward_pre_hook(lambda m, a, l=l: z_in.__setitem__(l, a[0][0])))
        handles.append(block.mlp.register_forward_hook(lambda m, a, out, l=l: mlp.__setitem__(l, out[0])))
    norm = model.transformer.ln_f if family == "gpt2" else model.model.norm
    handles.append(norm.register_forward_pre_hook(lambda m, a: final.append(a[0][0])))
    with torch.no_grad():
        model(ids)
        for h in handles:
            h.remove()
        H = model.config.num_attention_heads
        d = model.config.hidden_size
        dh = d // H
        heads, bias = [], torch.zeros(d, dtype=torch.float64)
        for l, block in enumerate(layers):
            z = z_in[l].reshape(-1, H, dh)
            if family == "gpt2":
                W_O = block.attn.c_proj.weight.reshape(H, dh, d)  # Conv1D: x @ W
                W_V = block.attn.c_attn.weight[:, 2 * d :]  # [d, H*dh]
                # ln_1's beta through W_V plus b_V reach the output as a constant (the pattern sums to 1)
                b_V = (block.ln_1.bias @ W_V + block.attn.c_attn.bias[2 * d :]).reshape(H, dh)
                z = z - b_V
                bias = bias + block.attn.c_proj.bias + torch.einsum("hk,hkd->d", b_V, W_O)
            else:
                W_O = block.self_attn.o_proj.weight.T.reshape(H, dh, d)  # Linear: x @ W.T
            heads.append(torch.einsum("thk,hkd->htd", z, W_O))
        embed = model.get_input_embeddings()(ids)[0]
        pos = model.transformer.wpe(torch.arange(len(PROBE_IDS)))[None][0] if family == "gpt2" else None
    stack = [*torch.cat(heads)] + [mlp[l] for l in range(len(layers))] + [embed] + ([pos] if pos is not None else [])
    stack.append(bias.expand_as(embed))
    return model, torch.stack(stack), final[0]


@pytest.mark.parametrize("key", ["gpt2", "llama"])
def test_dla_equals_hf_by_hand(key, tmp_path):
    """The HF model's own writers, centred where compatibility mode centres (LayerNorm models), dotted with the
    final norm's gamma * (lm_head[target] - lm_head[cf]) over the final norm's own scale of its input."""
    from resid_widgets import Session
    from resid_widgets.session.attribution import AttributionRun

    path = build_family_dir(FAMILIES[key], tmp_path / key)
    model, stack, final = _hf_parts(path, key)
    assert rel(stack.sum(0).numpy(), final.numpy()) <= 1e-10  # the HF writers sum to the final norm's input
    norm = model.transformer.ln_f if key == "gpt2" else model.model.norm
    eps = norm.eps if key == "gpt2" else norm.variance_epsilon
    if key == "gpt2":  # LayerNorm: centre, and compatibility mode centres the writers too
        stack = stack - stack.mean(-1, keepdim=True)
        final = final - final.mean(-1, keepdim=True)
    s = (final.pow(2).mean(-1) + eps).sqrt()  # [T]
    W = model.get_output_embeddings().weight  # [V, d]
    u = norm.weight * (W[TARGET] - W[CF])
    hf = ((stack * u).sum(-1) / s).numpy()  # [W, T]

    run = AttributionRun(Session(str(path), device="cpu"), PROBE_IDS)
    att = run.dla(TARGET, CF)
    assert record(key, "DLA vs HF by hand", rel(att.values, hf)) <= TOL
    dec = run.decompose()
    assert record(key, "writers vs HF by hand", rel(dec.vectors, stack.numpy())) <= TOL


# ---- value biases, the top-1 direction, bad input -------------------------------------------------------------
def test_value_biases_move_into_bias():
    """A bridge whose weights are not processed keeps b_V and ln1's beta: each head's constant output moves
    into ``bias`` (TransformerLens's fold_value_biases convention) and the writers still sum to the residual."""
    from resid_widgets import Session
    from resid_widgets.session.attribution import AttributionRun

    bridge = native_bridge("LN", seed=7)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in bridge.named_parameters():
            value_or_out_bias = ".attn." in name and (".v." in name or ".o." in name) and name.endswith("bias")
            if value_or_out_bias or ".ln1." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.5)
    session = Session(bridge)
    run = AttributionRun(session, list(range(3, 15)))
    assert any(vb is not None for vb in run.weights.value_bias), "the fixture must have value biases"
    dec = run.decompose()
    assert dec.error <= TOL
    _, cache = bridge.run_with_cache(torch.tensor([list(range(3, 15))]))
    tl, labels = cache.get_full_resid_decomposition(expand_neurons=False, return_labels=True)
    heads = [i for i, lab in enumerate(labels) if lab.startswith("L")]
    assert rel(dec.vectors[heads], tl[heads, 0]) > 1e-3  # TL's heads keep their value bias; ours moved it:
    expected = []
    for l in range(bridge.cfg.n_layers):
        attn, ln1 = bridge.blocks[l].attn, bridge.blocks[l].ln1
        vb = ln1.b @ attn.W_V + attn.b_V  # [H, d_head]: ln1's beta through W_V, plus b_V
        expected.append(tl[l * 4 : (l + 1) * 4, 0] - torch.einsum("hk,hkd->hd", vb, attn.W_O)[:, None])
    assert rel(dec.vectors[heads], torch.cat(expected)) <= TOL
    assert run.dla(TARGET, CF).checks["holds"]


def test_top1_direction_is_the_lens_top1(demo_session):
    from resid_widgets.session.attribution import AttributionRun

    run = AttributionRun(demo_session, "Mr. and Mrs.")
    a = demo_session.analyze("Mr. and Mrs.", top_k=1)
    for row in (2, demo_session.n_layers):
        att = run.dla("top1", row=row)
        np.testing.assert_array_equal(att.target_ids, a.top_ids[row, :, 0])
        np.testing.assert_allclose(att.lens_value, a.target_logits[row, :, 0] if a.target_logits.size else att.lens_value)
        assert att.checks["logit"] <= TOL
    top = run.dla("top1").top(5)
    assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)


def test_memory_streams_over_layers(demo_session):
    """All-position per-head attribution holds per layer [P, H] values, never [L, H, T, d]; the result is [W, T]."""
    from resid_widgets.session.attribution import AttributionRun

    run = AttributionRun(demo_session, "Mr. and Mrs. Bennet had five daughters, and the eldest was Jane.")
    att = run.dla(" Bennet", " Darcy")
    T, L, H = len(run.token_ids), demo_session.n_layers, run.weights.n_heads
    assert att.values.shape == (L * H + L + 3, T) and att.head_values().shape == (L, H, T)
    assert att.checks["holds"]


def test_bad_input_is_refused_clearly(demo_session):
    from resid_widgets.session.attribution import AttributionRun

    run = AttributionRun(demo_session, "Mr. and Mrs.", neuron_positions=[-1])
    T, L = len(run.token_ids), demo_session.n_layers
    with pytest.raises(ValueError, match=rf"row {L + 1} is out of range: this model has rows 0\.\.{L}"):
        run.dla(" Bennet", row=L + 1)
    with pytest.raises(ValueError, match=rf"position {T} is out of range: the prompt has {T} positions"):
        run.dla(" Bennet", positions=[0, T])
    with pytest.raises(ValueError, match="single tokens"):
        run.dla(" Bennet and Darcy")
    with pytest.raises(TypeError, match="one token"):
        run.dla([" Bennet", " Darcy"])
    with pytest.raises(ValueError, match="recorded at positions"):
        run.neurons(" Bennet", positions=0)
    with pytest.raises(ValueError, match="position 99 is out of range"):
        AttributionRun(demo_session, "Mr. and Mrs.", neuron_positions=[99])
    with pytest.raises(ValueError, match="writes after row 1"):
        run.neurons(" Bennet", row=1, layers=[2])


def test_neurons_refused_without_mlp_hook_post():
    from resid_widgets import Session
    from resid_widgets.session.attribution import AttributionRun

    from transformer_lens.model_bridge.sources import native

    bridge = native.boot(dict(n_layers=2, d_model=32, d_head=8, n_heads=4, n_ctx=32, d_vocab=100, attn_only=True, normalization_type="LN", seed=0))
    session = Session(bridge)
    run = AttributionRun(session, list(range(5, 12)))
    assert run.decompose().error <= TOL and "0_mlp_out" not in run.labels
    with pytest.raises(ValueError, match="no neuron activations \\(hook_post\\)"):
        AttributionRun(session, list(range(5, 12)), neuron_positions=[-1])
    with pytest.raises(ValueError, match="hook_post"):
        run.neurons(3, positions=[0])
