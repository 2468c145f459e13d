"""Shared fixtures: small models built offline, nothing downloaded.

Test tiers (markers):
  (none)  unit/integration: random-weight TransformerLens bridges, a tiny local HF GPT-2 directory,
          the embedded demo model; seconds each.
  ui      real Chromium via Playwright: the bundle with a fake model, JupyterLab end to end, the
          exported HTML file.
  slow    executes the example notebooks headlessly.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

REL_TOL = 1e-4  # float32 comparisons: relative
ABS_TOL = 1e-4  # ... and absolute, for values near zero


def native_bridge(normalization_type: str = "LN", *, n_layers: int = 2, seed: int = 0, d_vocab: int = 1000, n_ctx: int = 128):
    from transformer_lens.model_bridge.sources import native

    return native.boot(
        dict(
            n_layers=n_layers,
            d_model=64,
            d_head=16,
            n_heads=4,
            d_mlp=256,
            n_ctx=n_ctx,
            d_vocab=d_vocab,
            act_fn="gelu",
            normalization_type=normalization_type,
            seed=seed,
        )
    )


def perturb_norms(bridge, seed: int = 1, scale: float = 0.5) -> None:
    """Random models start with LN weight 1 / bias 0, which hides a missing b_U: perturb them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bridge.named_parameters():
            if "ln" in name:
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="session")
def ln_model():
    return native_bridge("LN")


@pytest.fixture(scope="session")
def rms_model():
    return native_bridge("RMS", seed=3)


@pytest.fixture(scope="session")
def biased_model():
    """LayerNorm weights/biases perturbed, then compatibility mode folds ln_final into W_U and b_U."""
    b = native_bridge("LN", seed=5)
    perturb_norms(b)
    b.enable_compatibility_mode(disable_warnings=True)
    assert b.b_U.abs().max() > 0.1, "the fixture must have a non-zero unembedding bias"
    return b


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory):
    """A tiny GPT-2 saved as a Hugging Face directory with its own byte-level BPE tokenizer."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    out = tmp_path_factory.mktemp("tiny_gpt2")
    text = [
        "The capital of France is Paris. The capital of England is London.",
        "Mr. and Mrs. Bennet had five daughters. It is a truth universally acknowledged.",
        "This is a sentence. This is another sentence. Step 1: add. Step 2: subtract.",
    ] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>"])
    tok = GPT2TokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=2, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # non-trivial final LayerNorm so b_U matters after folding
        model.transformer.ln_f.weight.add_(torch.randn(32) * 0.3)
        model.transformer.ln_f.bias.add_(torch.randn(32) * 0.3)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_session(tiny_hf_dir):
    from resid_widgets import Session

    return Session(str(tiny_hf_dir), device="cpu")


@pytest.fixture(scope="session")
def demo_session():
    from resid_widgets import Session

    return Session(device="cpu")
