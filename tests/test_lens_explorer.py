"""LensKLExplorer and analyses/lens_stats.py: the numbers against independent computations, the charts against the numbers.

Two references for the per-row KL statistics: (1) numpy over the analyses' own ``kl_to_output`` arrays (the
pooling: BOS mask, padding, quartiles), and (2) the lenses' own evaluation, ``resid_widgets.lenses.evaluate``,
which computes KL(model output ‖ lens) from the residual rows of TransformerLens's ``run_with_cache`` of each
unpadded prompt (not the session's pipeline). KL is float32 in the pipeline: tolerance 1e-3 nats.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import reference
from resid_widgets.analyses.lens_stats import entropy_by_row, kl_by_row, lens_comparison, top1_agreement_by_row
from resid_widgets.lenses import JacobianLens, LogitLens, final_logits, get_lens, kl_to_output, mean_kl_table

KL_TOL = dict(rtol=0, atol=1e-3)  # nats
PROMPTS = [  # different lengths: the batch is right-padded
    "Miss Bennet was not in the habit of walking out before breakfast.",
    "It was generally agreed at Highbury that Mr. Elton would marry.",
    "Anne said nothing.",
]
KINDS = ("logit", "jacobian", "tuned")


def squeeze(a):
    return np.squeeze(np.asarray(a, dtype=np.float64))


def lens_of(kind, session):
    return LogitLens.for_model(session) if kind == "logit" else get_lens(kind, session)


@pytest.fixture(scope="module")
def reference_rows(demo_session):
    """[R, N, d] residual rows of every prompt's unpadded run_with_cache, concatenated, and the [N] BOS mask."""
    rows, bos = [], []
    bos_id = demo_session.tokenizer.bos_token_id
    for p in PROMPTS:
        tokens, _, cache = reference.single_run(demo_session.model, p)
        rows.append(reference.resid_rows(demo_session.model, cache))
        assert int(tokens[0]) == bos_id  # the model prepends BOS
        bos.append(np.arange(len(tokens)) == 0)
    return torch.cat(rows, dim=1), np.concatenate(bos)


@pytest.fixture(scope="module")
def by_lens(demo_session):
    return {k: demo_session.analyze_batch(PROMPTS, top_k=1, lens=k) for k in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_kl_by_row_against_numpy_and_the_lens_evaluation(kind, demo_session, by_lens, reference_rows):
    analyses = by_lens[kind]
    assert all(a.lens == kind for a in analyses)
    resid, bos = reference_rows
    for exclude_bos in (True, False):
        s = kl_by_row(analyses, exclude_bos=exclude_bos)
        # (1) numpy over the analyses' arrays: pooled real positions, BOS dropped by hand
        cells = np.concatenate(
            [np.asarray(a.kl, np.float64)[:, 1:] if exclude_bos else np.asarray(a.kl, np.float64) for a in analyses],
            axis=1,
        )
        assert s["n"] == cells.shape[1] == sum(a.n_tokens - exclude_bos for a in analyses)
        np.testing.assert_allclose(s["mean"], cells.mean(1), rtol=1e-12)
        np.testing.assert_allclose(s["std"], cells.std(1), rtol=1e-12)
        for q, key in ((25, "q25"), (50, "median"), (75, "q75")):
            np.testing.assert_allclose(s[key], np.percentile(cells, q, axis=1), rtol=1e-12)
        # (2) the lens's own evaluation from TransformerLens's residual rows (float64 statistics)
        lens = lens_of(kind, demo_session)
        ref = kl_to_output(demo_session, resid, lens)
        ref = ref[:, ~bos] if exclude_bos else ref
        assert ref.shape[1] == s["n"]
        np.testing.assert_allclose(s["mean"], ref.mean(1), **KL_TOL)
        np.testing.assert_allclose(s["std"], ref.std(1), **KL_TOL)
        np.testing.assert_allclose(s["q25"], np.percentile(ref, 25, axis=1), **KL_TOL)
        np.testing.assert_allclose(s["q75"], np.percentile(ref, 75, axis=1), **KL_TOL)
        table = mean_kl_table(demo_session, resid, [lens], skip=bos if exclude_bos else None)
        np.testing.assert_allclose(s["mean"], table[kind], **KL_TOL)
    assert s["mean"][-1] == 0 and s["mean"][0] > 0.1  # the output row is the model's own output


def test_entropy_and_agreement_against_the_lens_readout(demo_session, by_lens, reference_rows):
    resid, bos = reference_rows
    with torch.no_grad():
        final = final_logits(demo_session.model, resid[-1]).double()
        top1 = final.argmax(-1)
        for kind in KINDS:
            lens = lens_of(kind, demo_session)
            z = final_logits(demo_session.model, lens.transform(resid)).double()  # [R, N, V]
            logp = torch.log_softmax(z, -1)
            ent = -(logp.exp() * logp).sum(-1).numpy()[:, ~bos]
            agree = (z.argmax(-1) == top1).numpy()[:, ~bos]
            e = entropy_by_row(by_lens[kind])
            np.testing.assert_allclose(e["mean"], ent.mean(1), atol=1e-3)
            np.testing.assert_allclose(e["median"], np.median(ent, 1), atol=1e-3)
            a = top1_agreement_by_row(by_lens[kind])
            np.testing.assert_allclose(a["pct"], 100 * agree.mean(1), atol=1e-9)
            assert a["pct"][-1] == 100 and a["n"] == agree.shape[1]


def test_lens_stats_refuse_mixed_or_empty_input(by_lens):
    with pytest.raises(ValueError, match="different lenses"):
        kl_by_row([by_lens["logit"][0], by_lens["tuned"][0]])
    with pytest.raises(ValueError, match="no analyses"):
        kl_by_row([])
    with pytest.raises(ValueError, match="no lens"):
        lens_comparison({})


# ---- the explorer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def explorer(demo_session):
    from resid_widgets import LensKLExplorer

    e = LensKLExplorer(demo_session, PROMPTS)
    yield e
    e.close()


def test_explorer_numbers_are_lens_stats(explorer, by_lens):
    d = explorer.data()
    assert d["lenses"] == list(KINDS) and d["unavailable"] == {}
    assert d["row_labels"] == ["embed", "0", "1", "2", "3"]
    for k in KINDS:
        ref = kl_by_row(by_lens[k])
        for key in ("mean", "std", "q25", "median", "q75"):
            np.testing.assert_allclose(d["kl"][k][key], ref[key], rtol=1e-6, atol=1e-7)
        assert explorer.analyses[k][0].lens == k
    # the shipped lenses read the output better than the logit lens at the embeddings, the tuned lens at every row but the last
    assert (d["kl"]["tuned"]["mean"][:-1] < d["kl"]["logit"]["mean"][:-1]).all()
    assert d["kl"]["jacobian"]["mean"][0] < d["kl"]["logit"]["mean"][0]
    df = explorer.to_dataframe()
    assert len(df) == 3 * 5 and set(df.lens) == set(KINDS)
    np.testing.assert_allclose(df[df.lens == "tuned"].kl_mean, d["kl"]["tuned"]["mean"])
    assert f"{d['kl']['tuned']['mean'][0]:.3f}" in explorer.table.value


def test_explorer_charts_hold_the_numbers_and_update_in_place(explorer):
    from resid_widgets.widgets.lens_kl import LENS_COLORS

    e = explorer
    kl, second = e.figures["kl"], e.figures["second"]
    marks_before = list(kl.marks)
    lines = {k: e._lines["kl"][k] for k in KINDS}
    bands = {k: e._bands["kl"][k] for k in KINDS}
    try:
        d = e.data()
        for k in KINDS:
            np.testing.assert_allclose(squeeze(lines[k].y), d["kl"][k]["mean"])
            np.testing.assert_allclose(squeeze(bands[k].y), np.stack([d["kl"][k]["q25"], d["kl"][k]["q75"]]))
            # one colour per lens, the same in both charts and in the legends
            assert list(lines[k].colors) == [LENS_COLORS[k]] == list(e._lines["second"][k].colors)
            assert list(bands[k].fill_colors) == [LENS_COLORS[k]]
            assert LENS_COLORS[k] in e._charts["kl"].legend.value and f"{k} lens" in e._charts["second"].legend.value
            np.testing.assert_allclose(squeeze(e._lines["second"][k].y), d["entropy"][k]["mean"])
        assert kl.axes[0].tick_labels[0] == "embed" and kl.axes[0].tick_labels[1] == "0"

        # log axis: the same marks on a log scale, the output row (KL 0) left out
        e.log_toggle.value = True
        assert e.status.value == ""
        assert isinstance(kl.axes[1].scale, type(e._log)) and all(m.scales["y"] is e._log for m in kl.marks)
        for k in KINDS:
            assert len(lines[k].x) == 4 and (squeeze(lines[k].y) > 0).all()
            np.testing.assert_allclose(squeeze(lines[k].y), d["kl"][k]["mean"][:-1])
        # ... on the same row range as before, so the last row's tick stays inside the figure
        assert (kl.axes[0].scale.min, kl.axes[0].scale.max) == (0, 4) and 4 in list(kl.axes[0].tick_values)
        ticks = np.asarray(kl.axes[1].tick_values)
        lo_data = min(min(d["kl"][k]["q25"][:-1].min(), d["kl"][k]["mean"][:-1].min()) for k in KINDS)
        hi_data = max(max(d["kl"][k]["q75"][:-1].max(), d["kl"][k]["mean"][:-1].max()) for k in KINDS)
        assert len(ticks) >= 2 and lo_data <= ticks.min() and ticks.max() <= hi_data  # powers of ten inside the data
        np.testing.assert_allclose(np.log10(ticks) % 1, 0, atol=1e-9)
        e.spread_dropdown.value = "std"
        lo = np.maximum(d["kl"]["logit"]["mean"] - d["kl"]["logit"]["std"], 1e-4)[:-1]
        np.testing.assert_allclose(squeeze(bands["logit"].y)[0], lo)
        e.log_toggle.value = False
        assert all(m.scales["y"] is e._linear for m in kl.marks) and len(lines["logit"].x) == 5
        e.second_dropdown.value = "agreement"
        for k in KINDS:
            np.testing.assert_allclose(squeeze(e._lines["second"][k].y), d["agreement"][k]["pct"])
            assert not e._bands["second"][k].visible
        assert "agreement" in e._charts["second"].title.lower()

        # BOS toggle: recomputed from the stored analyses
        e.bos_toggle.value = False
        assert e.data()["kl"]["logit"]["n"] == d["kl"]["logit"]["n"] + len(PROMPTS)
        e.bos_toggle.value = True

        # the prompts box: bad input reports and keeps everything; good input recomputes on the button
        e.prompts_text.value = "  \n "
        e.recompute_button.click()
        assert "no prompts" in e.status.value and e.data()["prompts"] == PROMPTS
        e.prompts_text.value = "x " * 2000
        e.recompute_button.click()
        assert "context" in e.status.value and e.data()["unavailable"] == {} and e.data()["prompts"] == PROMPTS
        e.prompts_text.value = "Anne said nothing.\n\nMr. and Mrs. Elton were at home."
        e.recompute_button.click()
        assert e.status.value == "" and e.data()["prompts"] == ["Anne said nothing.", "Mr. and Mrs. Elton were at home."]
        assert e.data()["kl"]["tuned"]["n"] != d["kl"]["tuned"]["n"]
        assert list(kl.marks)[: len(marks_before)] == marks_before and e._lines["kl"]["logit"] is lines["logit"]
        np.testing.assert_allclose(squeeze(lines["tuned"].y), e.data()["kl"]["tuned"]["mean"])
    finally:
        e.set_prompts(PROMPTS)
        e.second_dropdown.value = "entropy"
        e.spread_dropdown.value = "iqr"


def test_explorer_lists_lenses_a_model_lacks(tiny_session):
    """A model without fitted lenses: the logit lens is shown, the others are listed as unavailable (no exception);
    a lens object passed in is used (an identity Jacobian lens reads exactly like the logit lens)."""
    from resid_widgets import LensKLExplorer

    e = LensKLExplorer(tiny_session, ["This is a sentence.", "Step 1: add."])
    try:
        assert e.lenses == ["logit"] and set(e.unavailable) == {"jacobian", "tuned"}
        text = e.availability.value
        assert "jacobian" in text and "tuned" in text and "fit_lens" in text and e.status.value == ""
        assert not e._lines["kl"]["tuned"].visible and e._lines["kl"]["logit"].visible
        assert "tuned" not in e._charts["kl"].legend.value and "tuned" not in e.table.value
    finally:
        e.close()
    e = LensKLExplorer(tiny_session, ["This is a sentence.", "Step 1: add."], lenses=["logit", JacobianLens.identity(tiny_session)])
    try:
        d = e.data()
        assert d["lenses"] == ["logit", "jacobian"] and e.unavailable == {}
        np.testing.assert_allclose(d["kl"]["jacobian"]["mean"], d["kl"]["logit"]["mean"], atol=1e-5)
    finally:
        e.close()
    with pytest.raises(ValueError, match="none of the lenses"):
        LensKLExplorer(tiny_session, ["Step 1: add."], lenses=("tuned",))
