"""The seed-workflow explorers: numbers against independent computations, charts against the numbers.

Every expected value here is computed in the test from the model itself (``run_with_cache`` one prompt at a
time, the model's logits, ``ln_final(resid) @ W_U + b_U``, a numpy SVD / eigen-decomposition), never from
the package's analysis functions. Widget tests check that each chart's marks hold the returned arrays and
that a change updates the *same* mark objects.
"""

from __future__ import annotations

import html

import numpy as np
import pytest
import torch

import reference
from resid_widgets.analyses.task_vectors import cosine_matrix, pca
from resid_widgets.analyses.workflows import marker_positions, token_char_spans
from resid_widgets.widgets._charts import table_html

TOL = dict(rtol=1e-4, atol=1e-4)
PCT_TOL = dict(rtol=1e-4, atol=2e-3)  # percentages (0..100) from float32 sums

PROMPTS = [  # different lengths on purpose: right padding must not move the last real token
    "Mr. and Mrs. Bennet had five daughters.",
    "This is a sentence.",
    "Step 1: add.",
    "It is a truth universally acknowledged.",
]


def single_run(session, prompt):
    """Tokens, logits [T, V] and cache of one unpadded prompt: the independent reference."""
    return reference.single_run(session.model, prompt)


def resid_rows(session, cache) -> torch.Tensor:
    return reference.resid_rows(session.model, cache)


def lens_logits(session, resid: torch.Tensor) -> torch.Tensor:
    return reference.lens_logits(session.model, resid)


def squeeze(a):
    return np.squeeze(np.asarray(a, dtype=np.float64))


# ---- markers --------------------------------------------------------------------------------------


def test_marker_positions_hand_made():
    tokens = ["<bos>", "Ste", "p", " 1", ":", " add", ".", " Ste", "p", " 2", ":", " Th", "ere", "fore", " x"]
    text = "Step 1: add. Step 2: Therefore x"
    assert "".join(tokens[1:]) == text
    df = marker_positions(text, tokens, ["Step 1", "Step 2", "Therefore", "ore", "2:", "absent"], n_skip=1)
    # by hand: " Ste"(7) holds the S of "Step 2" (char 13); " Th"(11) holds the T of "Therefore" (char 21);
    # "fore"(13) holds the o of "ore" (char 27); " 2"(9) holds char 18
    assert df["pos"].tolist() == [1, 7, 11, 13, 9, -1]
    assert df["char"].tolist() == [0, 13, 21, 27, 18, -1]
    named = marker_positions(text, tokens, {"Problem": "Step", "Conclusion": "Therefore"}, n_skip=1)
    assert named["name"].tolist() == ["Problem", "Conclusion"] and named["pos"].tolist() == [1, 11]
    # the seed's approximation would put "Therefore" at int(21 * 14 / 32) = 9, two tokens early
    assert int(21 * (len(tokens) - 1) / len(text)) != 11


def test_marker_spans_fall_back_to_decode():
    # a character split over two tokens decodes to U+FFFD per piece: cumulative lengths need decode()
    text = "a é b"
    pieces = ["a", " \ufffd", "\ufffd", " b"]
    prefixes = ["a", "a \ufffd", "a é", "a é b"]
    with pytest.raises(ValueError, match="decode"):
        token_char_spans(pieces, text)
    spans = token_char_spans(pieces, text, decode=lambda n: prefixes[n - 1])
    assert spans.tolist() == [[0, 1], [1, 3], [3, 3], [3, 5]]
    assert marker_positions(text, pieces, ["b"], decode=lambda n: prefixes[n - 1])["pos"].tolist() == [3]


# ---- seed 000: ProjectionExplorer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def projection(tiny_session):
    from resid_widgets import ProjectionExplorer

    e = ProjectionExplorer(
        tiny_session,
        {"bennet": PROMPTS[0], "sentence": PROMPTS[1]},
        prompt="Step 1: add. Step 2: subtract. This is a sentence.",
        markers=["Step 1", "Step 2", "This"],
        groups={"a": PROMPTS[:2], "b": PROMPTS[2:]},
        tau=0.9,
    )
    yield e
    e.close()


def numpy_projection(session, prompt, tau):
    """[R, T] projection % and the final-LN projection % from a numpy SVD of W_U and the cache."""
    W = session.model.W_U.detach().double().numpy()
    _, _, cache = single_run(session, prompt)
    k, S, energy, pct = reference.svd_projection(W, resid_rows(session, cache).double().numpy(), tau)
    final = reference.svd_projection(W, cache["ln_final.hook_normalized"][0].double().numpy(), tau)[3]
    return pct, final, k, S, energy


def test_projection_numbers(projection, tiny_session):
    d = projection.data()
    for i, prompt in enumerate(PROMPTS[:2]):
        pct, final, k, S, energy = numpy_projection(tiny_session, prompt, 0.9)
        assert d["k"] == k
        np.testing.assert_allclose(d["singular_values"], S, rtol=1e-4, atol=1e-5 * S.max())  # W_U is centred: the last S is ~0
        np.testing.assert_allclose(d["cumulative_energy"], energy, rtol=1e-5)
        np.testing.assert_allclose(d["layer_mean"][i], pct[:, 1:].mean(1), **PCT_TOL)  # BOS (position 0) excluded
        np.testing.assert_allclose(d["layer_last"][i], pct[:, -1], **PCT_TOL)
        np.testing.assert_allclose(d["final_last"][i], final[-1], **PCT_TOL)
    # groups: mean and population s.d. of the final-LN projection at each prompt's last token
    for g, members in enumerate((PROMPTS[:2], PROMPTS[2:])):
        vals = [numpy_projection(tiny_session, p, 0.9)[1][-1] for p in members]
        np.testing.assert_allclose(d["group_mean"][g], np.mean(vals), **PCT_TOL)
        np.testing.assert_allclose(d["group_std"][g], np.std(vals), **PCT_TOL)
    # per-position chart: the final-LN row of the chain prompt
    _, final, _, _, _ = numpy_projection(tiny_session, d["position_prompt"], 0.9)
    np.testing.assert_allclose(d["position_pct"], final, **PCT_TOL)


def test_projection_markers_match_tokenizer_offsets(projection, tiny_session):
    text = projection.data()["position_prompt"]
    enc = tiny_session.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    markers = projection.data()["markers"]
    for name, pos in zip(markers["name"], markers["pos"]):
        c = text.find(name)
        expected = 1 + next(i for i, (s, e) in enumerate(offsets) if s <= c < e)  # +1: the BOS
        assert pos == expected, name


def test_projection_charts_hold_the_data_and_update_in_place(projection):
    e, d = projection, projection.data()
    m = e.fig_layers.marks
    np.testing.assert_allclose(squeeze(m[0].y), d["layer_mean"])
    np.testing.assert_allclose(squeeze(m[1].y), d["layer_last"])
    np.testing.assert_allclose(squeeze(e.fig_concentration.marks[0].y), d["concentration_mean"])
    np.testing.assert_allclose(squeeze(e.fig_spectrum.marks[0].y), d["singular_values"], rtol=1e-6)
    np.testing.assert_allclose(squeeze(e.fig_energy.marks[0].y), d["cumulative_energy"])
    np.testing.assert_array_equal(squeeze(e.fig_energy.marks[2].x), [d["k"], d["k"]])  # the k(tau) line
    np.testing.assert_allclose(squeeze(e.fig_positions.marks[0].y), d["position_pct"])
    np.testing.assert_allclose(squeeze(e.fig_positions.marks[2].x)[:, 0], d["markers"]["pos"])
    assert list(e.fig_positions.marks[3].text) == ["Step 1", "Step 2", "This"]
    np.testing.assert_allclose(squeeze(e.fig_groups.marks[0].y), d["group_mean"])
    assert e.fig_layers.marks[2].tooltip is not None and e.fig_groups.marks[0].tooltip is not None
    # one hover Scatter per series, each with its series' single colour (markers keep it through updates)
    dots = [m for m in e.fig_layers.marks[2:] if m.visible]
    assert len(dots) == 2 * len(d["labels"]) and all(len(set(m.colors)) == 1 for m in dots)
    assert [m.colors[0] for m in dots] == list(e.fig_layers.marks[0].colors) * 2
    for m, y in zip(dots, list(d["layer_mean"]) + list(d["layer_last"])):
        np.testing.assert_allclose(np.asarray(m.y), y)

    marks = {name: list(fig.marks) for name, fig in e.figures.items()}
    before = [list(m.colors) for m in dots]
    e.tau = 0.5  # re-thresholds without a forward pass
    # every redraw sends the dots' colours again (bqplot repaints markers only on a change of `colors`)
    assert all(list(m.colors) != b and set(m.colors) == set(b) for m, b in zip(dots, before))
    d2 = e.data()
    assert d2["k"] < d["k"]
    assert {name: list(fig.marks) for name, fig in e.figures.items()} == marks  # same mark objects
    assert all(a is b for name in marks for a, b in zip(marks[name], e.figures[name].marks))
    np.testing.assert_allclose(squeeze(e.fig_layers.marks[0].y), d2["layer_mean"])
    np.testing.assert_array_equal(squeeze(e.fig_energy.marks[2].x), [d2["k"], d2["k"]])
    assert not np.allclose(d2["layer_mean"], d["layer_mean"])

    e.bos_toggle.value = False  # BOS back in the means
    pct, *_ = numpy_projection(e.session, PROMPTS[0], 0.5)
    np.testing.assert_allclose(e.data()["layer_mean"][0], pct.mean(1), **PCT_TOL)

    e.prompt_text.value = "This is a sentence. Step 2: add."
    assert e.status.value == ""
    assert e.fig_positions.marks[0] is marks["positions"][0]
    np.testing.assert_allclose(squeeze(e.fig_positions.marks[0].y), e.data()["position_pct"])
    assert e.data()["markers"]["pos"].tolist()[1:] == [e.data()["markers"]["pos"][1], 1]  # "This" at the first token

    e.row_dropdown.value = 1
    _, _, cache = single_run(e.session, "This is a sentence. Step 2: add.")
    assert e.data()["position_row"] == 1 and len(e.data()["position_pct"]) == cache["blocks.0.hook_resid_post"].shape[1]

    e.prompt_text.value = "   "  # invalid: reported, charts unchanged
    assert "empty" in e.status.value
    np.testing.assert_allclose(squeeze(e.fig_positions.marks[0].y), e.data()["position_pct"])
    e.tau, e.bos_toggle.value = 0.9, True


# ---- seed 001: LogitDiffExplorer ------------------------------------------------------------------


@pytest.fixture(scope="module")
def logit_diff(tiny_session):
    from resid_widgets import LogitDiffExplorer

    e = LogitDiffExplorer(tiny_session, PROMPTS, answers=" It", counterfactuals=[" This", " The", " This", " The"], top_k=5)
    yield e
    e.close()


def test_logit_diff_against_the_models_logits(logit_diff, tiny_session):
    d = logit_diff.data()
    tok = tiny_session.tokenizer
    a_id = tok.encode(" It", add_special_tokens=False)[0]
    for i, (prompt, cf) in enumerate(zip(PROMPTS, [" This", " The", " This", " The"])):
        c_id = tok.encode(cf, add_special_tokens=False)[0]
        tokens, logits, cache = single_run(tiny_session, prompt)
        assert d["last_pos"][i] == len(tokens) - 1
        # the final row is the model's own output at the last real token
        np.testing.assert_allclose(d["logit_diff"][i, -1], float(logits[-1, a_id] - logits[-1, c_id]), **TOL)
        z = lens_logits(tiny_session, resid_rows(tiny_session, cache)[:, -1])  # [R, V]
        np.testing.assert_allclose(d["logit_diff"][i], (z[:, a_id] - z[:, c_id]).numpy(), **TOL)
        np.testing.assert_array_equal(d["answer_rank"][i], (z > z[:, a_id : a_id + 1]).sum(-1).numpy())
    np.testing.assert_allclose(d["mean"], d["logit_diff"].mean(0))
    np.testing.assert_allclose(d["std"], d["logit_diff"].std(0))

    # the ranking table: the model's own top-k at the last token of prompt 0
    _, logits, _ = single_run(tiny_session, PROMPTS[0])
    probs = torch.softmax(logits[-1], -1)
    top = torch.topk(logits[-1], 5)
    df = logit_diff.ranking(0)
    np.testing.assert_array_equal(df["token_id"], top.indices.numpy())
    np.testing.assert_allclose(df["logit"], top.values.numpy(), **TOL)
    np.testing.assert_allclose(df["prob"], probs[top.indices].numpy(), **TOL)
    for shown, j in zip(df["token"].tolist(), top.indices.tolist()):
        text = tok.decode([j])  # partial UTF-8 characters are shown as their bytes instead of U+FFFD
        assert shown == text if "\ufffd" not in text else shown.startswith("\\x")


def test_logit_diff_charts_and_table(logit_diff):
    e, d = logit_diff, logit_diff.data()
    lines, (band, mean) = e.fig_diff.marks[:4], e.fig_diff.marks[4:6]
    np.testing.assert_allclose(e.series_lines("logit_diff"), d["logit_diff"], rtol=1e-6)
    np.testing.assert_allclose(e.series_lines("rank"), d["answer_rank"] + 1)
    np.testing.assert_allclose(squeeze(mean.y), d["mean"], rtol=1e-6)
    np.testing.assert_allclose(squeeze(band.y), np.stack([d["mean"] - d["std"], d["mean"] + d["std"]]), rtol=1e-6)
    assert isinstance(e.fig_rank.marks[0].scales["y"], __import__("bqplot").LogScale)
    assert mean.visible and not any(m.visible for m in lines)
    e.mode_toggle.value = "lines"
    # four prompts: two solid lines, two dashed (colour and line style tell them apart)
    assert [m.visible for m in lines] == [True, True, False, False] and not mean.visible and e.fig_diff.marks[0] is lines[0]
    assert [list(m.colors) for m in lines[:2]] == [["#4e79a7", "#f28e2b"], ["#e15759", "#76b7b2"]]

    # the table shows every top-k token escaped
    for token in e.ranking(0)["token"]:
        assert html.escape(token.replace("\n", "\\n")) in e.table.value
    e.prompt_select.value = 1
    assert html.escape(e.data()["labels"][1]) in e.table.value

    e.set_prompts(["This is a sentence.", "Step 1: add."], answers=" It", counterfactuals=" This")
    assert e.fig_diff.marks[0] is lines[0] and e.data()["logit_diff"].shape[0] == 2
    np.testing.assert_allclose(e.series_lines(), e.data()["logit_diff"], rtol=1e-6)
    e.set_prompts(PROMPTS, answers=" It", counterfactuals=[" This", " The", " This", " The"])
    e.mode_toggle.value = "mean"


def test_table_html_escapes():
    out = table_html(["token"], [["<script>alert(1)</script>"]], caption="a<b")
    assert "<script>" not in out and "&lt;script&gt;" in out and "a&lt;b" in out


# ---- seed 003: TaskVectorExplorer -----------------------------------------------------------------

TASK_PROMPTS = ["Step 1: add.", "Step 2: subtract.", "This is a sentence.", "It is a truth.", "Mr. and Mrs. Bennet."]
TASK_LABELS = ["step", "step", "prose", "prose", "name"]


@pytest.fixture(scope="module")
def task_vectors(tiny_session):
    from resid_widgets import TaskVectorExplorer

    e = TaskVectorExplorer(tiny_session, TASK_PROMPTS, TASK_LABELS)
    yield e
    e.close()


def test_task_vectors_against_the_cache(task_vectors, tiny_session):
    raw = np.stack(
        [resid_rows(tiny_session, single_run(tiny_session, p)[2])[:, -1].numpy() for p in TASK_PROMPTS]
    )  # [P, R, d]
    expected = raw - raw.mean(0, keepdims=True)
    np.testing.assert_allclose(task_vectors.vectors(centred=False), raw, **TOL)
    np.testing.assert_allclose(task_vectors.vectors(), expected, rtol=1e-4, atol=1e-4 * np.abs(raw).max())
    R = raw.shape[1]
    for r in range(R):
        d = task_vectors.data(r)
        v = expected[:, r].astype(np.float64)
        cos = np.array([[a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) for b in v] for a in v])
        np.testing.assert_allclose(d["cosine"], cos, atol=1e-4)
        np.testing.assert_allclose(d["norms"][:, r], np.linalg.norm(v, axis=1), rtol=1e-4)
        # PCA via the eigen-decomposition of the covariance (a different route than the SVD)
        c = v - v.mean(0)
        evals, evecs = np.linalg.eigh(c.T @ c)
        order = np.argsort(evals)[::-1][:2]
        np.testing.assert_allclose(d["explained_variance"], evals[order] / evals.sum(), atol=1e-4)
        proj = c @ evecs[:, order]
        for j in range(2):
            sign = np.sign(proj[:, j] @ d["pca"][:, j]) or 1.0
            np.testing.assert_allclose(d["pca"][:, j], sign * proj[:, j], atol=1e-3 * np.abs(proj).max())
    labels = np.array(TASK_LABELS)
    ln = task_vectors.data()["label_norms"]
    for i, u in enumerate(["step", "prose", "name"]):
        np.testing.assert_allclose(ln[i], np.linalg.norm(expected[labels == u], axis=-1).mean(0), rtol=1e-4)
    df = task_vectors.to_dataframe()
    assert len(df) == len(TASK_PROMPTS) * R and df.filter(like="x").shape[1] == tiny_session.d_model
    np.testing.assert_allclose(df.filter(regex=r"^x\d+$").to_numpy().reshape(raw.shape), task_vectors.vectors())


def test_cosine_and_pca_helpers_edge_cases():
    x = np.array([[1.0, 0.0], [0.0, 0.0], [-2.0, 0.0]])
    np.testing.assert_allclose(cosine_matrix(x), [[1, 0, -1], [0, 0, 0], [-1, 0, 1]])
    coords, ratio = pca(x)
    np.testing.assert_allclose(ratio, [1.0, 0.0])
    np.testing.assert_allclose(np.abs(coords[:, 0]), np.abs(x[:, 0] - x[:, 0].mean()))


def test_task_vector_charts_stack_and_in_place_updates(task_vectors):
    import ipywidgets as W

    e = task_vectors
    R = e.task_vectors.n_rows
    assert isinstance(e.stack, W.Stack) and len(e.stack.children) == R
    link = e._link  # pure-frontend linkage: slider.value -> stack.selected_index
    assert isinstance(link, W.widgets.widget_link.Link)
    assert link.source == (e.row_slider, "value") and link.target == (e.stack, "selected_index")
    for r in range(R):
        d = e.data(r)
        heat = e.fig_heatmaps[r].marks[0]
        np.testing.assert_allclose(np.asarray(heat.color), d["cosine"], rtol=1e-6)
        assert heat.tooltip is not None and "color" in heat.tooltip.fields
        pts = e.fig_pca[r].marks[0]
        np.testing.assert_allclose(np.asarray(pts.x), d["pca"][:, 0], rtol=1e-6)
        np.testing.assert_allclose(np.asarray(pts.y), d["pca"][:, 1], rtol=1e-6)
    np.testing.assert_allclose(squeeze(e.fig_norms.marks[0].y), e.data()["label_norms"], rtol=1e-6)

    heat0, pts0, norms0 = e.fig_heatmaps[1].marks[0], e.fig_pca[1].marks[0], e.fig_norms.marks[0]
    e.set_prompts(TASK_PROMPTS[:3], ["a", "b", "b"])
    assert e.fig_heatmaps[1].marks[0] is heat0 and e.fig_pca[1].marks[0] is pts0 and e.fig_norms.marks[0] is norms0
    np.testing.assert_allclose(np.asarray(heat0.color), e.data(1)["cosine"], rtol=1e-6)
    assert np.asarray(heat0.color).shape == (3, 3)
    e.set_prompts(TASK_PROMPTS, TASK_LABELS)
    with pytest.raises(ValueError, match="two prompts"):
        e.set_prompts(["only one"])


# ---- seed 004: ContributionExplorer ---------------------------------------------------------------


@pytest.fixture(scope="module")
def contributions(tiny_session):
    from resid_widgets import ContributionExplorer

    e = ContributionExplorer(tiny_session, PROMPTS, bins=10)
    yield e
    e.close()


def cache_norms(session, prompts, exclude_bos):
    attn, mlp = zip(*(reference.output_norms(session.model, single_run(session, p)[2], 1 if exclude_bos else 0) for p in prompts))
    return np.concatenate(attn, 1), np.concatenate(mlp, 1)


def test_contribution_norms_against_the_cache(contributions, tiny_session):
    for bos in (True, False):
        contributions.bos_toggle.value = bos
        d = contributions.data()
        attn, mlp = cache_norms(tiny_session, PROMPTS, exclude_bos=bos)
        assert d["n_positions"] == attn.shape[1]
        np.testing.assert_allclose(d["attn"], attn, **TOL)
        np.testing.assert_allclose(d["mlp"], mlp, **TOL)
        np.testing.assert_allclose(d["attn_mean"], attn.mean(1), **TOL)
        np.testing.assert_allclose(d["attn_std"], attn.std(1), **TOL)
        np.testing.assert_allclose(d["mlp_mean"], mlp.mean(1), **TOL)
        np.testing.assert_allclose(d["mlp_std"], mlp.std(1), **TOL)
        assert d["hist_attn"].sum() == attn.size and d["hist_mlp"].sum() == mlp.size
        both = np.concatenate([attn.ravel(), mlp.ravel()])
        np.testing.assert_allclose(d["hist_edges"][[0, -1]], [both.min(), both.max()], **TOL)
        np.testing.assert_array_equal(d["hist_attn"], np.histogram(d["attn"], d["hist_edges"])[0])  # edges are float64
    contributions.bos_toggle.value = True


def test_contribution_charts_hold_the_data_and_update_in_place(contributions, tiny_session):
    e = contributions
    d = e.data()
    bands, bands_mlp, means = e.fig_layers.marks[:3]
    np.testing.assert_allclose(squeeze(means.y), np.stack([d["attn_mean"], d["mlp_mean"]]))
    np.testing.assert_allclose(squeeze(bands.y), np.stack([d["attn_mean"] - d["attn_std"], d["attn_mean"] + d["attn_std"]]))
    hist, hist_mlp = e.fig_hist.marks
    np.testing.assert_allclose(np.stack([squeeze(hist.y), squeeze(hist_mlp.y)]), np.stack([d["hist_attn"], d["hist_mlp"]]))
    np.testing.assert_allclose(squeeze(hist.x), (d["hist_edges"][1:] + d["hist_edges"][:-1]) / 2)
    pos, pos_mlp = e.fig_positions.marks
    np.testing.assert_allclose(np.stack([squeeze(pos.y), squeeze(pos_mlp.y)]), np.stack([d["position_attn"], d["position_mlp"]]))
    assert hist.tooltip is not None and pos.tooltip is not None

    e.prompt_select.value = 2
    e.layer_slider.value = 1
    d2 = e.data()
    _, _, cache = single_run(tiny_session, PROMPTS[2])
    np.testing.assert_allclose(d2["position_attn"], cache["blocks.1.hook_attn_out"][0, 1:].norm(dim=-1).numpy(), **TOL)
    assert e.fig_positions.marks[0] is pos and e.fig_layers.marks[2] is means
    np.testing.assert_allclose(np.stack([squeeze(pos.y), squeeze(pos_mlp.y)]), np.stack([d2["position_attn"], d2["position_mlp"]]))
    assert list(pos.x) == [f"{p}: {t}" for p, t in zip(d2["positions"], d2["position_tokens"])]
    df = e.to_dataframe()
    assert len(df) == sum(a.n_tokens for a in e.analyses) * tiny_session.n_layers


# ---- CompareWidget --------------------------------------------------------------------------------


def test_compare_widget(tiny_session):
    from resid_widgets import CompareWidget
    from resid_widgets.widgets.resid import METRICS

    w = CompareWidget(tiny_session, PROMPTS[0], PROMPTS[1], targets=[" It", " This"])
    try:
        assert tuple(w.metric_dropdown.options[i][1] for i in range(len(METRICS))) == METRICS
        tok = tiny_session.tokenizer
        a_id, c_id = (tok.encode(s, add_special_tokens=False)[0] for s in (" It", " This"))
        lines_last, lines_mean, lines_diff = (w.figures[k].marks[0] for k in ("last", "mean", "diff"))
        runs = [single_run(tiny_session, p) for p in PROMPTS[:2]]
        for metric in METRICS:
            w.metric = metric
            assert w.status.value == "" and w.metric == metric  # every metric draws (axis label included)
            d = w.data()
            vals = []
            for tokens, logits, cache in runs:
                r = resid_rows(tiny_session, cache)
                z = lens_logits(tiny_session, r)  # [R, T, V]
                v = {
                    "resid_norm": lambda: r.norm(dim=-1),
                    "attn_norm": lambda: torch.stack([cache[f"blocks.{l}.hook_attn_out"][0].norm(dim=-1) for l in range(tiny_session.n_layers)]),
                    "mlp_norm": lambda: torch.stack([cache[f"blocks.{l}.hook_mlp_out"][0].norm(dim=-1) for l in range(tiny_session.n_layers)]),
                    "top1_prob": lambda: torch.softmax(z, -1).max(-1).values,
                    "logit_diff": lambda: z[..., a_id] - z[..., c_id],
                    "target_rank": lambda: (z > z[..., a_id : a_id + 1]).sum(-1).float(),
                    "projection": lambda: torch.as_tensor(numpy_projection(tiny_session, PROMPTS[len(vals)], 0.9)[0]),
                    "entropy": lambda: -(torch.log_softmax(z.double(), -1).exp() * torch.log_softmax(z.double(), -1)).sum(-1),
                    "kl": lambda: (
                        torch.log_softmax(z[-1:].double(), -1).exp()
                        * (torch.log_softmax(z[-1:].double(), -1) - torch.log_softmax(z.double(), -1))
                    ).sum(-1),
                    "final_rank": lambda: (z > z.gather(-1, z[-1].argmax(-1).expand(z.shape[0], -1)[..., None])).sum(-1).float(),
                }[metric]().double().numpy()
                vals.append(v)
            va, vb = vals
            np.testing.assert_allclose(d["a_last"], va[:, -1], rtol=1e-4, atol=2e-3)
            np.testing.assert_allclose(d["b_last"], vb[:, -1], rtol=1e-4, atol=2e-3)
            np.testing.assert_allclose(d["a_mean"], va[:, 1:].mean(1), rtol=1e-4, atol=2e-3)  # BOS excluded
            np.testing.assert_allclose(d["diff_mean"], vb[:, 1:].mean(1) - va[:, 1:].mean(1), rtol=1e-4, atol=3e-3)
            np.testing.assert_allclose(d["diff_last"], d["b_last"] - d["a_last"])
            assert len(d["row"]) == (tiny_session.n_layers if metric.endswith(("attn_norm", "mlp_norm")) else tiny_session.n_layers + 1)
            # the charts hold the data and are the same marks
            assert w.figures["last"].marks[0] is lines_last and w.figures["diff"].marks[0] is lines_diff
            np.testing.assert_allclose(squeeze(lines_last.y), np.stack([d["a_last"], d["b_last"]]))
            np.testing.assert_allclose(squeeze(lines_mean.y), np.stack([d["a_mean"], d["b_mean"]]))
            np.testing.assert_allclose(squeeze(lines_diff.y), np.stack([d["diff_last"], d["diff_mean"]]))
            np.testing.assert_allclose(squeeze(lines_last.x), d["row"])

        w.metric = "projection"
        w.text_b.value = PROMPTS[2]  # Enter in the box: recompute
        assert w.data()["prompt_b"] == PROMPTS[2] and w.status.value == ""
        np.testing.assert_allclose(w.data()["b_last"], numpy_projection(tiny_session, PROMPTS[2], 0.9)[0][:, -1], **PCT_TOL)
        assert w.figures["last"].marks[0] is lines_last
    finally:
        w.close()

    w = CompareWidget(tiny_session, "Step 1: add.", "This is a sentence.")  # no targets
    try:
        with pytest.raises(ValueError, match="targets"):
            w.metric = "logit_diff"
        w.metric_dropdown.value = "target_rank"  # from the UI: reported, and the dropdown goes back
        assert "targets" in w.status.value and w.metric == "projection"
    finally:
        w.close()


def test_compare_widget_two_lenses_on_one_prompt(demo_session):
    """``lenses=("logit", "tuned")``: A and B are one prompt read with two lenses; the numbers against the lenses'
    readout of TransformerLens's own residual rows, the legends and titles name the lenses."""
    from resid_widgets import CompareWidget
    from resid_widgets.lenses import LogitLens, final_logits, get_lens
    from resid_widgets.widgets.lens_kl import LENS_COLORS

    prompt = "Mr. and Mrs. Bennet had five daughters."
    w = CompareWidget(demo_session, prompt, lenses=("logit", "tuned"))
    try:
        assert w.metric == "kl" and w.lenses == ("logit", "tuned") and w.status.value == ""
        assert w.a.prompt == w.b.prompt == prompt and w.text_b.layout.display == "none"
        _, _, cache = reference.single_run(demo_session.model, prompt)
        resid = reference.resid_rows(demo_session.model, cache)
        with torch.no_grad():
            logp = {
                name: torch.log_softmax(final_logits(demo_session.model, lens.transform(resid)).double(), -1)
                for name, lens in (("logit", LogitLens.for_model(demo_session)), ("tuned", get_lens("tuned", demo_session)))
            }
        top1 = logp["logit"][-1].argmax(-1)  # the model's own output row (every lens is the identity there)
        ref = {
            "kl": lambda lp: (lp[-1:].exp() * (lp[-1:] - lp)).sum(-1),
            "entropy": lambda lp: -(lp.exp() * lp).sum(-1),
            "final_rank": lambda lp: (lp > lp.gather(-1, top1.expand(lp.shape[0], -1)[..., None])).sum(-1).double(),
            "resid_norm": lambda lp: resid.double().norm(dim=-1),
        }
        lines_last, lines_diff = w.figures["last"].marks[0], w.figures["diff"].marks[0]
        for metric, fn in ref.items():
            w.metric = metric
            assert w.status.value == "" and w.metric == metric
            d = w.data()
            va, vb = fn(logp["logit"]).numpy(), fn(logp["tuned"]).numpy()
            tol = dict(rtol=1e-4, atol=1e-3)
            np.testing.assert_allclose(d["a_last"], va[:, -1], **tol)
            np.testing.assert_allclose(d["b_last"], vb[:, -1], **tol)
            np.testing.assert_allclose(d["a_mean"], va[:, 1:].mean(1), **tol)  # BOS excluded
            np.testing.assert_allclose(d["b_mean"], vb[:, 1:].mean(1), **tol)
            np.testing.assert_allclose(d["diff_mean"], d["b_mean"] - d["a_mean"])
            # ... and against the analyses the session gives for each lens
            field = metric  # the metric name is the Analysis attribute
            for key, lens in (("a_last", "logit"), ("b_last", "tuned")):
                again = np.asarray(getattr(demo_session.analyze(prompt, lens=lens), field), np.float64)[:, -1]
                np.testing.assert_allclose(d[key], again, rtol=1e-4, atol=1e-3)  # a re-run reuses the cached pass: float32 noise
            np.testing.assert_allclose(squeeze(lines_last.y), np.stack([d["a_last"], d["b_last"]]))
            np.testing.assert_allclose(squeeze(lines_diff.y), np.stack([d["diff_last"], d["diff_mean"]]))
        np.testing.assert_allclose(d["diff_mean"], 0, atol=1e-5)  # a lens-free metric: both lenses read the same rows
        w.metric = "kl"
        d = w.data()
        assert d["a_mean"][0] > d["b_mean"][0] > 0 and d["a_last"][-1] == d["b_last"][-1] == 0
        # the legends and titles say which lens is which, in the lenses' colours
        legend = w._charts["last"].legend.value
        assert "A: logit lens" in legend and "B: tuned lens" in legend
        assert LENS_COLORS["logit"] in legend and LENS_COLORS["tuned"] in legend
        assert list(lines_last.colors) == [LENS_COLORS["logit"], LENS_COLORS["tuned"]]
        assert "logit lens vs tuned lens" in w._charts["mean"].title and "tuned lens − logit lens" in w._charts["diff"].title
        assert "tuned lens − logit lens, mean over positions" in w._charts["diff"].legend.value
        # editing the prompt recomputes both lenses on the new prompt; B cannot get a prompt of its own
        w.text_a.value = "It was a fine morning."
        assert w.status.value == "" and w.a.prompt == w.b.prompt == "It was a fine morning." and w.lenses == ("logit", "tuned")
        np.testing.assert_allclose(
            w.data()["b_last"], demo_session.analyze("It was a fine morning.", lens="tuned").kl[:, -1], rtol=0, atol=1e-3
        )
        with pytest.raises(ValueError, match="one prompt"):
            w.set_prompts(b="Another prompt.")
        assert w.b.prompt == "It was a fine morning."
    finally:
        w.close()
    with pytest.raises(ValueError, match="leave prompt_b out"):
        CompareWidget(demo_session, "A prompt.", "B prompt.", lenses=("logit", "tuned"))
    with pytest.raises(ValueError, match="give two"):
        CompareWidget(demo_session, "A prompt.", lenses=("logit",))
    # the two-prompt mode reads both prompts with one lens (lens=), and says so
    w = CompareWidget(demo_session, "Mr. and Mrs.", "It was a fine morning.", lens="jacobian", metric="kl")
    try:
        assert w.lenses == ("jacobian", "jacobian") and "(jacobian lens)" in w._charts["last"].legend.value
        np.testing.assert_allclose(w.data()["a_mean"], demo_session.analyze("Mr. and Mrs.", lens="jacobian").kl[:, 1:].mean(1), rtol=0, atol=1e-3)
    finally:
        w.close()
