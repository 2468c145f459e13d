"""Edits recompute only what changed: the forward pass runs from the first changed token on (on the previous
prompt's key/value cache), the lens reads only the new positions, and the result equals a fresh analysis.

LayerNorm with absolute positions (GPT-2), RMSNorm with rotary positions (Llama), parallel attention + MLP
with rotary positions (Pythia), and sliding-window layers (Gemma-2, whose cache cannot be cropped back:
a full pass, still equal)."""

from __future__ import annotations

import numpy as np
import pytest

from families import PROBE_IDS, build_family_dir
from resid_widgets import Session

FIELDS = [
    "top_ids", "top_probs", "log_norm", "target_ranks", "target_logits", "entropy", "kl", "final_rank",
    "projection_pct", "projection_final_pct", "resid_norm", "attn_norm", "mlp_norm", "emergence_row", "target_emergence",
]
BASE = PROBE_IDS + [5, 9, 77, 301]  # 16 tokens


def assert_same(a, b, tol=1e-4):
    np.testing.assert_array_equal(a.token_ids, b.token_ids)
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if x.dtype.kind in "iu" and f != "target_ranks":
            np.testing.assert_array_equal(x, y, err_msg=f)
        else:
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol, err_msg=f)
    assert a.additivity["holds"] == b.additivity["holds"]
    for key in ("attn", "mlp", "block"):
        if key in b.additivity:
            assert a.additivity[key] == pytest.approx(b.additivity[key], rel=1e-3, abs=1e-9)


@pytest.fixture(scope="module", params=["gpt2", "llama", "pythia", "gemma2"])
def family_dir(request, tmp_path_factory):
    return request.param, build_family_dir(request.param, tmp_path_factory.mktemp(request.param))


EDITS = {
    "end": BASE[:-1] + [444],  # last token replaced
    "append": BASE + [12, 13],
    "middle": BASE[:7] + [250, 251] + BASE[9:],
    "start": [2] + BASE[1:],  # position 0: nothing to reuse
    "shorter": BASE[:9],
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_edit_equals_fresh_analysis(family_dir, edit, monkeypatch):
    name, path = family_dir
    s = Session(str(path), device="cpu")
    targets = [17, 42]
    s.analyze(BASE, top_k=5, targets=targets)
    forwards = []
    real_run = s._run
    monkeypatch.setattr(s, "_run", lambda ids, past=None: forwards.append((ids.shape[1], 0 if past is None else past.get_seq_length())) or real_run(ids, past))
    edited = s.analyze(EDITS[edit], top_k=5, targets=targets)
    fresh = Session(str(path), device="cpu").analyze(EDITS[edit], top_k=5, targets=targets)
    assert_same(edited, fresh)
    same = next((i for i, (x, y) in enumerate(zip(BASE, EDITS[edit])) if x != y), min(len(BASE), len(EDITS[edit])))
    same = min(same, len(EDITS[edit]) - 1)
    if name == "gemma2" or same == 0:
        assert forwards[0] == (len(EDITS[edit]), 0)  # a full pass
    else:
        assert forwards[0] == (len(EDITS[edit]) - same, same)  # only the new suffix, on the cached prefix


def test_targets_changed_recompute_every_lens_cell_but_reuse_the_forward(family_dir):
    name, path = family_dir
    s = Session(str(path), device="cpu")
    s.analyze(BASE, top_k=5, targets=[17])
    edited = s.analyze(EDITS["end"], top_k=3, targets=[42, 64])
    fresh = Session(str(path), device="cpu").analyze(EDITS["end"], top_k=3, targets=[42, 64])
    assert_same(edited, fresh)


def test_streamed_updates_cover_every_cell_once(family_dir):
    """begin carries the final row and the new positions' norms/projection; lens blocks tile the rest."""
    _, path = family_dir
    s = Session(str(path), device="cpu")
    s.analyze(BASE, top_k=5)
    seen = np.zeros((len(EDITS["append"]),), int)
    stages = []
    for u in s.stream(EDITS["append"], top_k=5, view=(10, 14)):
        stages.append(u.stage)
        if u.stage == "begin":
            keep = u.keep
            assert keep == len(BASE)  # the appended tokens are the only new positions
            assert (u.analysis.top_ids[-1, :, 0] >= 0).all()  # the final row is there from the start
            assert (u.analysis.top_ids[:-1, keep:, 0] == -1).all()  # the other new cells not yet
        elif u.stage == "lens":
            seen[u.positions[0] : u.positions[1]] += 1
    assert stages[0] == "begin" and stages[-1] == "done"
    assert (seen[keep:] == 1).all() and (seen[:keep] == 0).all()
