"""The embedded demo model: offline, through the same loading path as a hub model, and deterministic."""

import numpy as np
import pytest
import torch

from resid_widgets.session.loading import DEMO_MODEL_DIR

PROMPTS = ["Mr. and Mrs.", "It is a truth universally acknowledged, that", "She was"]


def test_files_and_size():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL_DIR.iterdir() if p.is_file()}
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "MODEL_CARD.md"):
        assert name in files, f"{name} missing from {DEMO_MODEL_DIR}"
    assert sum(files.values()) <= 10 * 2**20
    from safetensors import safe_open

    with safe_open(DEMO_MODEL_DIR / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_loads_offline_as_a_bridge(demo_session):
    assert type(demo_session.model).__name__ == "TransformerBridge"
    assert demo_session.is_demo and "demo" in demo_session.name
    assert demo_session.n_ctx >= 1024


def _hf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def test_lens_last_row_equals_hf_logits(demo_session):
    hf, _ = _hf()
    for prompt in PROMPTS:
        a = demo_session.analyze(prompt, top_k=5)
        with torch.no_grad():
            logits = hf(torch.as_tensor(a.token_ids)[None]).logits[0]
        top = torch.softmax(logits.double(), -1).topk(5, -1)
        np.testing.assert_array_equal(a.top_ids[-1], top.indices.numpy())
        np.testing.assert_allclose(a.top_probs[-1], top.values.numpy(), rtol=1e-4, atol=1e-6)


def _greedy(model, ids, n=12):
    ids = torch.as_tensor(ids)[None]
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids)[0, -1].argmax()
            ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
    return ids[0].tolist()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuation_is_deterministic(demo_session, prompt):
    ids = demo_session.to_token_ids(prompt)[0]
    first = _greedy(demo_session.model, ids)
    assert _greedy(demo_session.model, ids) == first
    hf, tok = _hf()
    with torch.no_grad():
        ref = hf.generate(torch.as_tensor(ids)[None], max_new_tokens=12, do_sample=False, pad_token_id=tok.eos_token_id)
    assert ref[0].tolist() == first
    text = tok.decode(first[len(ids):])
    assert text.strip() and text.isprintable() or "\n" in text
