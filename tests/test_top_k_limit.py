"""A hostile top_k (issue 23): ``Session.analyze`` keeps at most ``protocol.json traits.top_k.max`` (100)
predictions per cell, the widget's own limit. Bounded only by the vocabulary, one analysis of a
128,256-token model at 1,024 tokens and a full top-k would be ~10 GB of ids, probabilities and logits."""

import numpy as np
import pytest

from resid_widgets import Session
from resid_widgets.cli import main
from resid_widgets.payload.protocol import TRAITS
from resid_widgets.session.session import MAX_TOP_K


def test_the_limit_is_the_contracts():
    assert MAX_TOP_K == TRAITS["top_k"]["max"] == 100


@pytest.mark.parametrize("top_k", [MAX_TOP_K + 1, 4096, 10**9])
def test_session_refuses_a_top_k_over_the_limit_and_keeps_the_session(demo_session, top_k):
    s = Session(demo_session.model)
    good = s.analyze("Mr. and Mrs.")
    assert s.d_vocab > MAX_TOP_K  # the vocabulary alone would have allowed 101..4096
    with pytest.raises(ValueError, match=rf"top_k must be between 1 and {MAX_TOP_K} .*got {top_k}"):
        s.analyze("Mr. and Mrs.", top_k=top_k)
    with pytest.raises(ValueError, match="top_k must be between 1 and"):
        s.analyze_batch(["Mr. and Mrs."], top_k=top_k)
    assert s._last.analysis is good
    a = s.analyze("Mr. and Mrs.", top_k=MAX_TOP_K)  # the limit itself is fine
    assert a.top_ids.shape[-1] == MAX_TOP_K and np.all(np.diff(a.top_probs, axis=-1) <= 1e-7)


@pytest.mark.parametrize("value", [str(MAX_TOP_K + 1), "1000000000", "0"])
def test_cli_top_k_over_the_limit_is_one_line_exit_2(capsys, value):
    code = main(["analyze", "Mr. and Mrs.", "--top-k", value])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0] == f"resid-widgets: error: --top-k must be between 1 and {MAX_TOP_K}, got {value}"
