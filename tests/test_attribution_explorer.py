"""``AttributionExplorer``: its numbers against the analysis functions and the lens, its marks against its numbers."""

from __future__ import annotations

import numpy as np
import pytest

PROMPTS = ["It was a fine morning.", "She said nothing at all.", "Mr. Darcy bowed."]
ANSWER, CF = " The", " the"
TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def explorer(demo_session):
    from resid_widgets import AttributionExplorer

    return AttributionExplorer(demo_session, PROMPTS, ANSWER, CF, top_k=8)


def test_numbers_equal_the_analysis_and_the_lens(explorer, demo_session):
    from resid_widgets import AttributionRun

    d = explorer.data()
    assert d["dla"].shape == (len(PROMPTS), len(d["writers"]))
    for i, prompt in enumerate(PROMPTS):
        run = AttributionRun(demo_session, prompt, neuron_positions=[-1])
        att = run.dla(ANSWER, CF, positions=-1)
        np.testing.assert_allclose(d["dla"][i], att.values[:, 0], **TOL)
        np.testing.assert_allclose(d["neurons"][i], run.neurons(ANSWER, CF, layers=d["neuron_layers"]).values[:, 0], **TOL)
        # the row curve is the lens's own logit difference (the session's analysis, computed independently)
        a = demo_session.analyze(prompt, targets=[ANSWER, CF])
        np.testing.assert_allclose(d["lens_diff"][i], a.logit_diff(ANSWER, CF)[:, -1], rtol=1e-4, atol=1e-4)
        assert abs(d["dla"][i].sum() + att.constant[0] - d["lens_diff"][i, -1]) <= 1e-4 * max(1, abs(d["lens_diff"][i, -1]))
    np.testing.assert_allclose(d["mean"], d["dla"].mean(0), **TOL)
    L, H = demo_session.n_layers, 4
    assert d["head_mean"].shape == (L, H)
    np.testing.assert_allclose(d["head_mean"].ravel(), d["mean"][: L * H], **TOL)
    mlp = [d["mean"][d["writers"].index(f"{l}_mlp_out")] for l in range(L)]
    np.testing.assert_allclose(d["layer_mean"][:, 1], mlp, **TOL)
    top_mlps = sorted(range(L), key=lambda l: -abs(mlp[l]))[:2]
    assert sorted(top_mlps) == d["neuron_layers"].tolist()


def test_marks_hold_the_numbers_and_update_in_place(explorer):
    d = explorer.data()
    grid, curve, lines = explorer._grid, explorer._curve, explorer._layer_lines
    pos, neg = explorer._charts["writers"].bars
    np.testing.assert_allclose(np.asarray(grid.color), d["head_mean"], **TOL)
    np.testing.assert_allclose(np.asarray(curve.y), d["lens_diff"].mean(0), **TOL)
    np.testing.assert_allclose(np.asarray(lines.y), d["layer_mean"].T, **TOL)
    labels, values = explorer.top_writers()
    assert list(pos.x) == labels and len(labels) == 8
    np.testing.assert_allclose(np.asarray(pos.y) + np.asarray(neg.y), values, **TOL)
    assert list(values) == sorted(values, reverse=True)
    by_abs = sorted(np.abs(d["mean"]), reverse=True)[:8]
    np.testing.assert_allclose(sorted(np.abs(values), reverse=True), by_abs, **TOL)
    assert (np.asarray(pos.y) >= 0).all() and (np.asarray(neg.y) <= 0).all()
    nlabels, nvalues = explorer.top_neurons()
    npos, nneg = explorer._charts["neurons"].bars
    assert list(npos.x) == nlabels and all(lab.startswith(f"L{l}N") for lab in nlabels for l in [int(lab[1 : lab.index("N")])])
    np.testing.assert_allclose(np.asarray(npos.y) + np.asarray(nneg.y), nvalues, **TOL)

    explorer.view_select.value = 1  # one prompt: the same marks now hold prompt 1's numbers
    assert explorer.status.value == ""
    np.testing.assert_allclose(np.asarray(grid.color).ravel(), d["dla"][1][: d["head_mean"].size], **TOL)
    np.testing.assert_allclose(np.asarray(curve.y), d["lens_diff"][1], **TOL)
    assert explorer._grid is grid and explorer._charts["writers"].bars[0] is pos
    explorer.view_select.value = -1


def test_set_prompts_and_bad_input(explorer, demo_session):
    from resid_widgets import AttributionExplorer

    grid = explorer._grid
    explorer.set_prompts(PROMPTS[:2])
    assert explorer.data()["dla"].shape[0] == 2 and explorer._grid is grid
    with pytest.raises(ValueError, match="single tokens"):
        AttributionExplorer(demo_session, PROMPTS, " The answer", CF)
    with pytest.raises(ValueError, match="got 2 answers for 3 prompts"):
        AttributionExplorer(demo_session, PROMPTS, [" The", " A"], CF)
    explorer.set_prompts(PROMPTS)
    df = explorer.to_dataframe()
    assert len(df) == len(PROMPTS) * len(explorer.data()["writers"])
