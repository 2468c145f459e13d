"""Residual / attention-out / MLP-out norms against TransformerLens's own cache (seed 004)."""

import numpy as np
import torch

from resid_widgets import Session
from resid_widgets.analyses.norms import additivity_errors

TOKENS = [11, 12, 13, 14, 15, 16]


def test_norms_match_cache(biased_model):
    a = Session(biased_model).analyze(TOKENS)
    with torch.no_grad():
        _, cache = biased_model.run_with_cache(torch.tensor([TOKENS]))
    L = biased_model.cfg.n_layers
    rows = [cache["blocks.0.hook_resid_pre"]] + [cache[f"blocks.{l}.hook_resid_post"] for l in range(L)]
    np.testing.assert_allclose(a.resid_norm, np.stack([np.linalg.norm(r[0].numpy(), axis=-1) for r in rows]), rtol=1e-5)
    for l in range(L):
        np.testing.assert_allclose(a.attn_norm[l], np.linalg.norm(cache[f"blocks.{l}.hook_attn_out"][0].numpy(), axis=-1), rtol=1e-5)
        np.testing.assert_allclose(a.mlp_norm[l], np.linalg.norm(cache[f"blocks.{l}.hook_mlp_out"][0].numpy(), axis=-1), rtol=1e-5)
    assert a.attn_norm.shape == a.mlp_norm.shape == (L, len(TOKENS))
    assert a.additivity["holds"] and a.additivity["attn"] < 1e-5 and a.additivity["mlp"] < 1e-5


def test_additivity_failure_is_reported():
    """An architecture whose attention output already contains the residual (BLOOM) must be flagged."""
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(4, 8, generator=g)
    attn = torch.randn(4, 8, generator=g)
    mlp = torch.randn(4, 8, generator=g)
    good = {
        "blocks.0.hook_resid_pre": pre,
        "blocks.0.hook_attn_out": attn,
        "blocks.0.hook_resid_mid": pre + attn,
        "blocks.0.hook_mlp_out": mlp,
        "blocks.0.hook_resid_post": pre + attn + mlp,
    }
    assert max(additivity_errors(good, 1).values()) < 1e-6
    bloom_like = dict(good, **{"blocks.0.hook_attn_out": pre + attn})
    errs = additivity_errors(bloom_like, 1)
    assert errs["attn"] > 0.1 and errs["mlp"] < 1e-6


def test_parallel_blocks_are_checked_in_their_own_form():
    """GPT-NeoX / Pythia blocks have no resid_mid: resid_post = resid_pre + attn_out + mlp_out."""
    from resid_widgets.analyses.norms import additivity_report

    g = torch.Generator().manual_seed(1)
    pre, attn, mlp = (torch.randn(4, 8, generator=g) for _ in range(3))
    parallel = {
        "blocks.0.hook_resid_pre": pre,
        "blocks.0.hook_attn_out": attn,
        "blocks.0.hook_mlp_out": mlp,
        "blocks.0.hook_resid_post": pre + attn + mlp,
    }
    report = additivity_report(parallel, 1, parallel=True)
    assert report["holds"] and report["form"] == "parallel" and report["block"] < 1e-6
    broken = dict(parallel, **{"blocks.0.hook_resid_post": pre + attn})  # the MLP's update is missing
    assert not additivity_report(broken, 1, parallel=True)["holds"]
