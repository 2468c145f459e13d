"""Streamed stages in real Chromium: the view paints the first stage at once (unread lens cells grey),
fills in block by block, and ends pixel-identical to the complete payload."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from resid_widgets import Session
from resid_widgets.payload.encode import encode_analysis, encode_delta
from test_frontend import OUT_DIR, base_state, open_widget

pytestmark = pytest.mark.ui

CELLS = """() => {
  const c = document.querySelector('.rw-heatmap-canvas');
  const s = c.width / parseFloat(c.style.width);
  const w = +c.dataset.cellWidth, h = +c.dataset.rowHeight, R = +c.dataset.rows, T = +c.dataset.cols;
  const ctx = c.getContext('2d');
  const out = [];
  for (let r = 0; r < R; r++) for (let p = 0; p < T; p++) {
    const d = ctx.getImageData(Math.round((p * w + 3) * s), Math.round((r * h + 3) * s), 1, 1).data;
    out.push([d[0], d[1], d[2]]);
  }
  return {R, T, out};
}"""


def cells(page) -> np.ndarray:
    got = page.evaluate(CELLS)
    return np.array(got["out"], dtype=int).reshape(got["R"], got["T"], 3)


def is_grey(rgb) -> bool:
    return int(np.ptp(rgb)) <= 6


def test_stream_paints_first_stage_then_blocks(tiny_session, chromium_browser, frontend_bundle):
    s = Session(tiny_session.model)
    s.chunk_elements = 3 * 2 * s.d_vocab  # 3 positions per lens block
    first = s.analyze("This is a sentence. This is", top_k=5)
    meta, blob = encode_analysis(first, seq=1)
    page = open_widget(chromium_browser, frontend_bundle, state=base_state(metric="top1_prob", layer=0, targets=[]), meta=meta, blob=blob, width=1000)
    try:
        before = cells(page)
        deltas = []  # encoded as each stage is yielded, as the widget does (later stages fill the same arrays)
        for u in s.stream("This is a sentence. This is another sentence. Step 1: add.", top_k=5):
            deltas.append(encode_delta(u, seq=2, base_seq=1))
        final = u.analysis
        R, T = final.n_rows, final.n_tokens
        keep = deltas[0][0]["keep"]
        assert 0 < keep < T
        page.evaluate("([m, b]) => window.py.delta(m, b)", [deltas[0][0], base64.b64encode(deltas[0][1]).decode()])
        page.wait_for_function(f"() => +document.querySelector('.rw-heatmap-canvas').dataset.cols === {T}")
        after_begin = cells(page)
        page.screenshot(path=str(OUT_DIR / "stream_begin.png"))
        # kept positions look as before, the final row is painted, the other new cells wait in grey
        np.testing.assert_array_equal(after_begin[:, :keep], before[:, :keep])
        assert not any(is_grey(after_begin[R - 1, p]) for p in range(T))
        assert all(is_grey(after_begin[r, p]) for r in range(R - 1) for p in range(keep, T))
        for content, b in deltas[1:]:
            page.evaluate("([m, b]) => window.py.delta(m, b)", [content, base64.b64encode(b).decode()])
        streamed = cells(page)
        page.screenshot(path=str(OUT_DIR / "stream_done.png"))
    finally:
        page.close()
    # the same analysis shown from its complete payload paints the same pixels
    meta2, blob2 = encode_analysis(final, seq=2)
    ref = open_widget(chromium_browser, frontend_bundle, state=base_state(metric="top1_prob", layer=0, targets=[]), meta=meta2, blob=blob2, width=1000)
    try:
        np.testing.assert_array_equal(streamed, cells(ref))
        assert not any(is_grey(c) for c in streamed.reshape(-1, 3))
    finally:
        ref.close()


def test_delta_for_another_base_waits_for_the_payload(tiny_session, chromium_browser, frontend_bundle):
    """A view that is not showing the analysis a delta builds on ignores the stream (no wrong cells)."""
    s = Session(tiny_session.model)
    first = s.analyze("This is a sentence.", top_k=5)
    meta, blob = encode_analysis(first, seq=1)
    page = open_widget(chromium_browser, frontend_bundle, state=base_state(metric="top1_prob", layer=0, targets=[]), meta=meta, blob=blob)
    try:
        before = cells(page)
        begin = next(iter(s.stream("This is a sentence. This is another.", top_k=5)))
        content, b = encode_delta(begin, seq=5, base_seq=4)  # built on payload 4, which this view never saw
        assert content["keep"] > 0
        page.evaluate("([m, b]) => window.py.delta(m, b)", [content, base64.b64encode(b).decode()])
        page.wait_for_timeout(100)
        np.testing.assert_array_equal(cells(page), before)
        assert page.page_errors == []
    finally:
        page.close()


def test_lens_menu_sends_one_edit_and_kl_metric_paints(demo_session, chromium_browser, frontend_bundle):
    """Choosing a lens is one edit message; a payload read with the tuned lens shows its KL per cell."""
    from resid_widgets import Session
    from test_frontend import sends

    a = Session(demo_session.model).analyze("Mr. and Mrs. Bennet had five daughters", top_k=5, lens="tuned")
    meta, blob = encode_analysis(a, seq=1)
    page = open_widget(chromium_browser, frontend_bundle, state=base_state(metric="kl", layer=1, targets=[], lens="tuned"), meta=meta, blob=blob, width=1000)
    try:
        assert page.input_value(".rw-lens") == "tuned"
        assert page.input_value(".rw-metric") == "kl"
        assert "KL(model output ‖ tuned lens)" in page.text_content(".rw-legend")
        px = cells(page)
        assert not any(is_grey(c) for c in px[:-1].reshape(-1, 3))  # every non-final row painted
        page.select_option(".rw-lens", "jacobian")
        page.wait_for_function("window.log.sends.some(m => m.type === 'edit')", timeout=3000)
        page.wait_for_timeout(600)
        edits = sends(page, "edit")
        assert len(edits) == 1 and edits[0]["changes"] == {"lens": "jacobian"}
        page.screenshot(path=str(OUT_DIR / "lens_kl.png"))
    finally:
        page.close()
