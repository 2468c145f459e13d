"""Big vocabularies and half precision.

* A Llama-shaped random model with Llama-3's 128,256-token vocabulary (1 layer, width 64) read out at
  1,024 tokens stays within 0.5 GB of a plain forward pass's peak memory (resident set sampled with
  psutil every 2 ms; the forward's own [T, vocab] float32 logits are 0.5 GB).
* On a short prompt its lens equals an independent, unchunked float64 readout (numpy) to 1e-4.
* A bf16 model's half-precision W_U is read in float32 vocabulary blocks: equal to the unchunked float32
  product to 1e-5; and the lens of the bf16 model equals its float32 copy's to the bf16 tolerance below.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from families import FAMILIES, PROBE_IDS, build_family_dir

from resid_widgets import Session
from resid_widgets.analyses.lens import FinalReadout

BIG_VOCAB = 128_256
N_TOKENS = 1024
MEMORY_BUDGET = 0.5e9

#: bf16 against float32 (8-bit mantissa, relative error ~2^-8 per operation, two layers)
BF16_PROB_ATOL = 0.02  # top-k probabilities
BF16_NAT_ATOL = 0.1  # log-normaliser, entropy (nats)
BF16_NORM_RTOL = 0.02  # residual / attention / MLP norms
BF16_TOP1_MARGIN = 0.25  # where float32's top-1 leads its top-2 by this many logits, bf16's top-1 is the same


@pytest.fixture(scope="module")
def big_vocab_dir(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from families import build_tokenizer

    out = tmp_path_factory.mktemp("llama_128k")
    cfg = LlamaConfig(vocab_size=BIG_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.model.norm.weight.add_(torch.randn(64) * 0.3)
        model.lm_head.weight.mul_(20.0)  # peaked rows
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


class PeakRSS:
    """The process's peak resident set while the block runs (sampled)."""

    def __enter__(self):
        import psutil

        self._proc, self._stop, self.peak = psutil.Process(), False, 0
        self.start = self._proc.memory_info().rss

        def sample():
            while not self._stop:
                self.peak = max(self.peak, self._proc.memory_info().rss)
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


@pytest.mark.slow  # ~40 s on 2 cores: 2 rows x 1,024 positions x 128,256 logits read out
def test_big_vocabulary_memory_beyond_the_forward(big_vocab_dir):
    s = Session(str(big_vocab_dir))
    ids = np.random.default_rng(0).integers(3, BIG_VOCAB, N_TOKENS)
    s.info(), s.subspace  # once per model: the SVD of W_U
    with torch.inference_mode():
        s.model(torch.as_tensor(ids)[None])  # warm
    with PeakRSS() as fwd:
        with torch.inference_mode():
            logits = s.model(torch.as_tensor(ids)[None])
    del logits
    with PeakRSS() as full:
        a = s.analyze(ids, targets=[5, 17])
    beyond = full.peak - fwd.peak
    print(f"forward peak {fwd.peak / 1e9:.2f} GB, analysis peak {full.peak / 1e9:.2f} GB, beyond {beyond / 1e9:.3f} GB")
    assert beyond <= MEMORY_BUDGET, f"the analysis used {beyond / 1e9:.2f} GB beyond a forward pass"
    assert (a.top_ids >= 0).all() and a.top_ids.shape == (2, N_TOKENS, 10)


def test_big_vocabulary_equals_unchunked_readout(big_vocab_dir):
    s = Session(str(big_vocab_dir))
    s.chunk_elements = 300_000  # several blocks of positions even on a short prompt
    a = s.analyze(PROBE_IDS, top_k=5, targets=[5, 17])
    rows = torch.as_tensor(a._resid, dtype=torch.float64)  # [R, T, d]
    normed = rows * torch.rsqrt(rows.pow(2).mean(-1, keepdim=True) + s.model.cfg.eps)
    z = (normed @ s.model.W_U.detach().double() + s.model.b_U.detach().double()).numpy()  # [R, T, V], one product
    lse = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
    top = np.argsort(-z, axis=-1)[..., :5]
    np.testing.assert_array_equal(a.top_ids[:-1], top[:-1])
    np.testing.assert_allclose(a.top_probs, np.exp(np.take_along_axis(z, top, -1) - lse[..., None]), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(a.log_norm, lse, atol=1e-4, rtol=1e-4)
    ranks = (z[..., None, :] > z[..., [5, 17]][..., :, None]).sum(-1)
    np.testing.assert_array_equal(a.target_ranks, ranks)


def test_half_precision_unembedding_is_read_in_float32_blocks():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(64, 50_000, generator=g).to(torch.bfloat16)
    b = torch.randn(50_000, generator=g).to(torch.bfloat16)
    x = torch.randn(7, 64, generator=g)
    chunked = FinalReadout(lambda t: t, W, b).logits(x)
    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, x @ W.float() + b.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key", ["llama", "gpt2"])
def test_bf16_lens_equals_float32_copy(key, tmp_path):
    path = str(build_family_dir(FAMILIES[key], tmp_path / key))
    ref = Session(path).analyze(PROBE_IDS, targets=[5, 17])
    s = Session(path, dtype=torch.bfloat16)
    assert s.model.W_U.dtype == torch.bfloat16
    a = s.analyze(PROBE_IDS, targets=[5, 17])
    np.testing.assert_allclose(a.top_probs, ref.top_probs, atol=BF16_PROB_ATOL)
    for f in ("log_norm", "entropy"):
        np.testing.assert_allclose(getattr(a, f), getattr(ref, f), atol=BF16_NAT_ATOL, err_msg=f)
    for f in ("resid_norm", "attn_norm", "mlp_norm"):
        np.testing.assert_allclose(getattr(a, f), getattr(ref, f), rtol=BF16_NORM_RTOL, atol=1e-3, err_msg=f)
    clear = (ref.top_logits[..., 0] - ref.top_logits[..., 1]) > BF16_TOP1_MARGIN
    assert clear.mean() > 0.3, "too few clear top-1 cells to test"
    np.testing.assert_array_equal(a.top_ids[..., 0][clear], ref.top_ids[..., 0][clear])
