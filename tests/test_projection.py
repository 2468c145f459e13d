"""Projection % onto the unembedding's token subspace, against a numpy SVD computed here."""

import numpy as np
import pytest
import torch

from reference import svd_projection
from resid_widgets import Session
from resid_widgets.analyses.projection import cumulative_fraction, k_for_tau

TOKENS = [5, 6, 7, 8, 900, 1, 2]


def _numpy_projection(W_U, vectors, tau):
    return svd_projection(W_U, vectors, tau)


@pytest.mark.parametrize("fixture", ["ln_model", "rms_model", "biased_model"])
@pytest.mark.parametrize("tau", [0.5, 0.9, 0.99])
def test_projection_matches_numpy(fixture, tau, request):
    model = request.getfixturevalue(fixture)
    a = Session(model).analyze(TOKENS, tau=tau)
    W = model.W_U.detach().numpy()
    k, S, energy, pct = _numpy_projection(W, a.resid, tau)
    assert a.k == k and a.tau == tau
    np.testing.assert_allclose(a.singular_values, S, rtol=1e-4, atol=1e-5 * S[0])  # centred W_U: one S ~ 0
    np.testing.assert_allclose(a.cumulative_energy, energy, rtol=1e-5)
    np.testing.assert_allclose(a.projection_pct, pct, rtol=1e-4, atol=1e-3)
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([TOKENS]))
    _, _, _, final = _numpy_projection(W, cache["ln_final.hook_normalized"][0].numpy(), tau)
    np.testing.assert_allclose(a.projection_final_pct, final, rtol=1e-4, atol=1e-3)
    # resid rows come straight from TransformerLens's own cache
    np.testing.assert_allclose(a.resid[-1], cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0].numpy(), rtol=1e-6)


def test_projection_at_rethresholds_without_forward(ln_model):
    s = Session(ln_model)
    a = s.analyze(TOKENS, tau=0.9)
    W = ln_model.W_U.detach().numpy()
    calls = []
    s._run = lambda *args, **kw: calls.append(1)  # any forward pass would now fail loudly
    for tau in (0.3, 0.75, 1.0):
        k, _, _, pct = _numpy_projection(W, a.resid, tau)
        np.testing.assert_allclose(a.projection_at(tau), pct, rtol=1e-4, atol=1e-3)
        b = a.with_tau(tau)
        assert b.k == k and b.tau == tau
    assert calls == []
    # tau = 1 keeps every direction of a full-rank W_U: everything is in the subspace
    np.testing.assert_allclose(a.projection_at(1.0), 100.0, rtol=1e-4)


def test_svd_is_computed_once_per_model(ln_model):
    s = Session(ln_model)
    s.analyze(TOKENS, tau=0.5)
    first = s.subspace
    s.analyze(TOKENS, tau=0.8)
    assert s.subspace is first


def test_zero_vector_projects_to_zero():
    U = torch.linalg.qr(torch.randn(8, 8))[0]
    cum = cumulative_fraction(torch.zeros(3, 8), U)
    assert torch.equal(cum, torch.zeros(3, 8))


def test_k_for_tau_edges():
    energy = np.array([0.5, 0.8, 0.95, 1.0])
    assert k_for_tau(energy, 0.5) == 1
    assert k_for_tau(energy, 0.51) == 2
    assert k_for_tau(energy, 1.0) == 4
    for bad in (0.0, -0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match="tau"):
            k_for_tau(energy, bad)


def test_concentration_index_is_area_under_curve(ln_model):
    a = Session(ln_model).analyze(TOKENS)
    curve = a.projection_curve() / 100
    np.testing.assert_allclose(a.concentration_index(), curve.mean(-1), rtol=1e-6)
    assert np.all((a.concentration_index() > 0) & (a.concentration_index() <= 1))
