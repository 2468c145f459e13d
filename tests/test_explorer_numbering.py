"""Issue 19 (items 1, 11) and 20 (item 5), explorer side: one layer numbering in every explorer, human menus,
and bad arguments refused with the valid range and nothing changed.

What a person sees in a bqplot chart is its axis's tick labels and a dot's tooltip (the dot's ``names``);
these tests read exactly those traits, and compare them with ``ResidWidget``'s row labels
(``Analysis.row_labels``, sent to the browser as ``row_labels``).
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

from resid_widgets import (
    CompareWidget,
    ContributionExplorer,
    LensKLExplorer,
    LogitDiffExplorer,
    ProjectionExplorer,
    TaskVectorExplorer,
)
from resid_widgets.analyses import lens_stats, rows
from resid_widgets.widgets import _explorer

ROOT = Path(__file__).resolve().parents[1]


def _tick_text(axis) -> list[str]:
    """The tick texts bqplot draws: tick_labels[value] where given, else the value itself."""
    labels = {str(k): v for k, v in (axis.tick_labels or {}).items()}
    return [labels.get(str(int(v)), str(int(v))) for v in axis.tick_values]


@pytest.fixture(scope="module")
def explorers(tiny_session):
    s = tiny_session
    return {
        "projection": ProjectionExplorer(s, ["Mr. and Mrs. Bennet", "It was a fine morning."]),
        "logit_diff": LogitDiffExplorer(s, ["It was a fine morning.", "She said nothing."], answers="a", counterfactuals="b"),
        "task_vectors": TaskVectorExplorer(s, ["one two", "three four", "five six"], ["x", "y", "x"]),
        "compare": CompareWidget(s, "Mr. and Mrs.", "It was"),
        "lens_kl": LensKLExplorer(s, ["Mr. and Mrs. Bennet had five"], lenses=("logit",)),
    }


def test_one_definition_of_row_labels(tiny_session):
    a = tiny_session.analyze("Mr. and Mrs. Bennet")
    assert a.row_labels == ["embed"] + [str(l) for l in range(tiny_session.n_layers)]
    assert a.row_labels == rows.row_labels(a.n_rows) == lens_stats.row_labels(a.n_rows)
    assert [rows.row_name(r) for r in range(3)] == ["embeddings", "after layer 0", "after layer 1"]
    # nothing in widgets/ or the analyses writes a row label of its own
    for path in list((ROOT / "resid_widgets" / "widgets").glob("*.py")) + [ROOT / "resid_widgets" / "cli.py"]:
        text = path.read_text()
        assert "row (0 = embeddings)" not in text, path
        assert '"embed"' not in text and "'embed'" not in text, path


@pytest.mark.parametrize("name", ["projection", "logit_diff", "task_vectors", "compare", "lens_kl"])
def test_every_row_axis_reads_like_the_heatmap(explorers, name, tiny_session):
    """Every x axis over residual rows: ticks ``embed, 0, 1, ...`` (ResidWidget's row labels), the same title,
    and each dot's tooltip names its row "after layer l" (never a bare row index)."""
    e = explorers[name]
    R = tiny_session.n_layers + 1
    expected = tiny_session.analyze("x").row_labels
    charts = [c for c in e._charts.values() if c.rows]
    assert charts, f"{name} has no chart over residual rows"
    for c in charts:
        assert c.x_axis.label == rows.ROW_AXIS
        assert _tick_text(c.x_axis) == expected[: len(c.x_axis.tick_values)] and len(c.x_axis.tick_values) == R
        for dot in c.dots:
            if not dot.visible:
                continue
            tips = list(dot.names)
            assert len(tips) == len(dot.x)
            for x, tip in zip(dot.x, tips):
                assert tip.endswith(rows.row_name(int(x))), (name, x, tip)
            assert list(dot.tooltip.fields) == ["name", "y"]


def test_row_menus_and_titles_use_the_numbering(explorers):
    pe = explorers["projection"]
    labels = [label for label, value in pe.row_dropdown.options if value != "final"]
    assert labels == ["embeddings", "after layer 0", "after layer 1"]
    pe.row = 2
    assert pe._charts["positions"].title.endswith("(after layer 1)")
    tv = explorers["task_vectors"]
    tv.row = 1
    assert tv.row_name.value.startswith("after layer 0")
    assert tv.row_slider.readout is False  # the slider's bare index would be a second numbering


def test_lens_kl_table_uses_the_labels(explorers):
    html = explorers["lens_kl"].table.value
    for lab in ("<td style='padding:0 8px'>embed</td>", "<td style='padding:0 8px'>0</td>"):
        assert lab in html


def test_compare_menu_shows_words_not_identifiers(explorers):
    cw = explorers["compare"]
    for label, value in cw.metric_dropdown.options:
        assert not label.startswith(f"{value} —") and label != value, label  # "top1_prob — …" / "kl — …" before
    assert dict((v, k) for k, v in cw.metric_dropdown.options)["kl"] == "KL(model output ‖ lens), nats"


def test_logit_diff_single_prompt_legend(tiny_session):
    one = LogitDiffExplorer(tiny_session, "It was a fine morning.", answers="a", counterfactuals="b")
    legend = one._charts["logit_diff"].legend.value
    assert "prompt(s)" not in legend and "mean of 1" not in legend
    assert not one._band.visible
    two = LogitDiffExplorer(tiny_session, ["It was.", "She said."], answers="a", counterfactuals="b")
    assert "mean of 2 prompts ± 1 s.d." in two._charts["logit_diff"].legend.value


def test_ranking_caption_is_not_a_table_caption(explorers):
    """A <caption> wraps to the table's width (three lines at ~300 px with the output free)."""
    html = explorers["logit_diff"].table.value
    assert "<caption" not in html and "rw-table-caption" in html


def test_task_vector_pca_ticks_are_few_and_round(explorers):
    tv = explorers["task_vectors"]
    for r, pc in enumerate(tv._pca_charts):
        for axis, v in ((pc.x_axis, tv.task_vectors.pca[r, :, 0]), (pc.y_axis, tv.task_vectors.pca[r, :, 1])):
            ticks = np.asarray(axis.tick_values)
            assert 2 <= len(ticks) <= 7, ticks
            assert ticks.min() >= v.min() - 1e-9 and ticks.max() <= v.max() + 1e-9
            step = np.diff(ticks)
            np.testing.assert_allclose(step, step[0])
            mant = step[0] / 10 ** np.floor(np.log10(step[0]))
            assert any(np.isclose(mant, m) for m in (1, 2, 2.5, 5)), step[0]
            assert not any(str(t) == "-0.0" for t in ticks)


# ---- bad arguments: a clear error with the valid range, nothing changed (issue 20 item 5) -----------


def test_constructors_refuse_out_of_range_and_non_text(tiny_session):
    s = tiny_session
    L = s.n_layers
    cases = [
        (lambda: ProjectionExplorer(s, ["a b"], row=99), ValueError, "[0, 2]"),
        (lambda: ProjectionExplorer(s, ["a b"], row=-1), ValueError, "[0, 2]"),
        (lambda: ProjectionExplorer(s, ["a b"], row=True), TypeError, "integer"),
        (lambda: ProjectionExplorer(s, ["a b"], tau=2), ValueError, "[0.01, 1]"),
        (lambda: ProjectionExplorer(s, ["a b"], tau=0), ValueError, "[0.01, 1]"),
        (lambda: ProjectionExplorer(s, [None]), TypeError, "prompt 0 is NoneType"),
        (lambda: ProjectionExplorer(s, {"a": 3}), TypeError, "must be a string"),
        (lambda: ProjectionExplorer(s, ["a b"], group_position="first"), ValueError, "'last' or 'mean'"),
        (lambda: TaskVectorExplorer(s, ["a b", "c d"], row=99), ValueError, "[0, 2]"),
        (lambda: TaskVectorExplorer(s, ["a b", None]), TypeError, "prompt 1"),
        (lambda: ContributionExplorer(s, ["a b"], layer=99), ValueError, f"[0, {L - 1}]"),
        (lambda: ContributionExplorer(s, ["a b"], layer=-1), ValueError, f"[0, {L - 1}]"),
        (lambda: ContributionExplorer(s, ["a b", "c d"], prompt_index=5), ValueError, "[0, 1]"),
        (lambda: ContributionExplorer(s, ["a b"], bins=0), ValueError, "1 or more"),
        (lambda: ContributionExplorer(s, ["a b"], bins=2.5), ValueError, "1 or more"),
        (lambda: CompareWidget(s, "a b", "c d", tau=2), ValueError, "[0.01, 1]"),
        (lambda: CompareWidget(s, None, "c d"), TypeError, "prompt 0"),
        (lambda: LensKLExplorer(s, [None], lenses=("logit",)), TypeError, "prompt 0"),
        (lambda: LogitDiffExplorer(s, [None], answers="a", counterfactuals="b"), TypeError, "prompt 0"),
    ]
    for make, kind, text in cases:
        with pytest.raises(kind) as err:
            make()
        assert text in str(err.value), (str(err.value), text)


def test_setters_refuse_and_keep_state(explorers, tiny_session):
    pe, tv = explorers["projection"], explorers["task_vectors"]
    before_tau, before_row, before_data = pe.tau, pe.row, pe.data()["layer_mean"].copy()
    for bad, kind in ((2, ValueError), (0.0, ValueError), ("x", TypeError), (True, TypeError)):
        with pytest.raises(kind):
            pe.tau = bad
    for bad in (99, -1, 3):
        with pytest.raises(ValueError, match=r"\[0, 2\]"):
            pe.row = bad
    with pytest.raises(TypeError, match="prompt 0"):
        pe.set_prompts([None])
    assert (pe.tau, pe.row) == (before_tau, before_row)
    np.testing.assert_array_equal(pe.data()["layer_mean"], before_data)
    assert pe._labels == ["Mr. and Mrs. Bennet", "It was a fine morning."]

    for bad in (99, 3, -1):
        with pytest.raises(ValueError):
            tv.row = bad
        with pytest.raises(ValueError):
            tv.data(bad)
    ce = ContributionExplorer(tiny_session, ["a b", "c d"])
    for bad in (99, tiny_session.n_layers, -1):
        with pytest.raises(ValueError):
            ce.layer = bad
    with pytest.raises(ValueError):
        ce.prompt_index = 2
    assert (ce.layer, ce.prompt_index) == (0, 0)
    ld = explorers["logit_diff"]
    with pytest.raises(ValueError):
        ld.ranking(99)
    with pytest.raises(ValueError):
        ld.ranking(0, row=99)


# ---- the template (issue 18 item 3): one _refresh, one figures, no function over 80 lines -------------


def test_explorers_share_one_template():
    classes = [ProjectionExplorer, LogitDiffExplorer, TaskVectorExplorer, ContributionExplorer, LensKLExplorer, CompareWidget]
    for cls in classes:
        assert issubclass(cls, _explorer.Explorer)
        assert "_refresh" not in vars(cls), f"{cls.__name__} copies _refresh"
        assert "_init_layout" not in vars(cls), f"{cls.__name__} copies _init_layout"
        src = inspect.getsource(cls.__init__)
        assert "self._start(" in src, f"{cls.__name__} does not build through the template"
    assert sum("figures" in vars(cls) for cls in classes) == 1  # only TaskVectorExplorer's lists of figures differ


def test_no_function_over_80_lines_in_widgets():
    long = []
    for path in sorted((ROOT / "resid_widgets" / "widgets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.name}:{node.name} ({n} lines)")
    assert not long, long


def test_tables_carry_the_row_labels_in_row_order(explorers, tiny_session):
    labels = tiny_session.analyze("x").row_labels
    df = explorers["logit_diff"].to_dataframe()
    assert list(df.pivot(index="label", columns="row_label", values="logit_diff").columns) == labels
    assert list(explorers["projection"].to_dataframe()["row_label"][: len(labels)]) == labels
    assert list(explorers["compare"].to_dataframe()["row_label"]) == labels
    assert list(explorers["lens_kl"].to_dataframe()["row_label"][: len(labels)]) == labels
