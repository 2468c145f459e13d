"""``AttributionPanel``: follows a ``ResidWidget``'s pinned cell; its marks hold the analysis' numbers."""

from __future__ import annotations

import numpy as np
import pytest

TOL = dict(rtol=1e-5, atol=1e-6)
PROMPT = "Mr. and Mrs."


@pytest.fixture
def pair(demo_session):
    from resid_widgets import ResidWidget
    from resid_widgets.widgets.attribution_panel import AttributionPanel

    w = ResidWidget(demo_session, PROMPT, targets=[" Bennet", " Darcy"])
    return w, AttributionPanel(w, top_k=6)


def test_pinning_a_cell_fills_the_panel(pair, demo_session):
    from resid_widgets import AttributionRun
    from resid_widgets.widgets.attribution import top_by_magnitude

    w, panel = pair
    assert panel.attribution is None and panel.status.value == ""
    L = demo_session.n_layers
    w.selected = [L, 5]
    assert panel.status.value == "" and panel.cell == (L, 5)
    ref = AttributionRun(demo_session, PROMPT).dla(" Bennet", " Darcy", row=L)
    np.testing.assert_allclose(panel.attribution.values, ref.values, **TOL)
    labels, values = top_by_magnitude(ref.labels, ref.values[:, 5], 6)
    pos, neg = panel._charts["writers"].bars
    assert list(pos.x) == labels
    np.testing.assert_allclose(np.asarray(pos.y) + np.asarray(neg.y), values, **TOL)
    assert list(values) == sorted(values, reverse=True)
    np.testing.assert_allclose(np.asarray(panel._heads.color), ref.head_values()[:, :, 5], **TOL)
    np.testing.assert_allclose(np.asarray(panel._layers.color), ref.layer_values[:, :, 5].T, **TOL)
    assert panel.writer_select.value == labels[int(np.argmax(np.abs(values)))]
    ppos, pneg = panel._charts["positions"].bars
    row = ref.values[ref.labels.index(panel.writer_select.value)]
    np.testing.assert_allclose(np.asarray(ppos.y) + np.asarray(pneg.y), row, **TOL)
    panel.writer_select.value = "embed"  # the same marks, now the embedding's row
    assert panel._charts["positions"].bars[0] is ppos
    np.testing.assert_allclose(np.asarray(ppos.y) + np.asarray(pneg.y), ref.values[ref.labels.index("embed")], **TOL)
    assert "sum" in panel.caption.value and "&#x27; Bennet&#x27;" in panel.caption.value  # token text escaped


def test_without_targets_the_lens_top1_and_the_embedding_row(pair, demo_session):
    w, panel = pair
    w.targets = []
    w.selected = [2, 3]
    assert panel.status.value == ""
    a = demo_session.analyze(PROMPT, top_k=1)
    assert int(panel.attribution.target_ids[3]) == int(a.top_ids[2, 3, 0])
    assert panel.attribution.checks["holds"]
    w.selected = [0, 1]  # row 0: only the embeddings and the bias wrote it
    assert panel.status.value == "" and panel.attribution.labels == ["embed", "pos_embed", "bias"]
    assert not panel._heads.visible and not panel._layers.visible  # no stale grid from the previous cell
    w.selected = []  # unpinned: what is shown stays
    assert panel.cell == (0, 1)


def test_a_new_prompt_is_followed(pair, demo_session):
    from resid_widgets import AttributionRun

    w, panel = pair
    w.selected = [3, 2]
    w.prompt = "She said nothing at all."  # a new analysis is published; the pinned cell now reads the new prompt
    w.selected = [3, 2]
    ref = AttributionRun(demo_session, "She said nothing at all.").dla(" Bennet", " Darcy", row=3)
    np.testing.assert_allclose(panel.attribution.values, ref.values, **TOL)
    assert panel.status.value == ""
