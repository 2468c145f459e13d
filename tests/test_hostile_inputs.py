"""Values that used to be silently coerced or unbounded (issue 20 items 5 and 6, the Session part) get a clear
error and leave the session as it was; an Analysis knows its size and the widget's cache is bounded in
bytes (item 8)."""

import sys

import numpy as np
import pytest

from resid_widgets import Session
from resid_widgets.analyses import result
from resid_widgets.session.session import MAX_PROMPT_CHARS, MAX_TARGETS


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(targets={" Bennet": 1}), TypeError, "list of strings or token ids, not dict"),
    (dict(targets={" Bennet"}), TypeError, "not set"),
    (dict(targets=[" Bennet"] * (MAX_TARGETS + 1)), ValueError, "at most 64"),
    (dict(targets=list(range(100_000))), ValueError, "100,000 targets"),
    (dict(prepend_bos="no"), TypeError, "prepend_bos"),
    (dict(prepend_bos=0), TypeError, "prepend_bos"),
    (dict(targets=["foo (#5)"]), ValueError, "names token 5, whose text is"),
    (dict(top_k=1.9), TypeError, "top_k"),
    (dict(top_k=True), TypeError, "top_k"),
    (dict(targets=[True]), TypeError, "targets"),
    (dict(tau=True), TypeError, "tau"),
    (dict(prompt="a" * (MAX_PROMPT_CHARS + 1)), ValueError, "characters long"),
    (dict(prompt=[1.5, 2.0]), TypeError, "integers"),
    (dict(prompt=[True, False]), TypeError, "integers"),
    (dict(prompt=[1] * 10_000_000), ValueError, "10,000,000 tokens long"),
])
def test_coercions_are_refused_and_the_session_is_kept(demo_session, kwargs, exc, match):
    s = Session(demo_session.model)
    good = s.analyze("Mr. and Mrs.", targets=[" Bennet"])
    last = s._last
    prompt = kwargs.pop("prompt", "Mr. and Mrs. Bennet")
    with pytest.raises(exc, match=match):
        s.analyze(prompt, **kwargs)
    assert s._last is last and s._last.analysis is good  # what was shown is still there


def test_the_tagged_form_still_round_trips(demo_session):
    names, ids = demo_session.resolve_targets([1, 1])
    assert demo_session.resolve_targets(names) == (names, ids)
    text = demo_session.token_strings([5])[5]
    assert demo_session.resolve_targets([f"{text} (#5)"])[1] == [5]
    assert demo_session.resolve_targets(np.array([5, 6]))[1] == [5, 6]


def test_analysis_nbytes_counts_every_array_once(demo_session):
    a = demo_session.analyze("Mr. and Mrs. Bennet had five daughters.", targets=[" Bennet"])
    arrays = {id(v.base if v.base is not None else v): (v.base if v.base is not None else v)
              for v in vars(a).values() if isinstance(v, np.ndarray)}
    floor = sum(x.nbytes for x in arrays.values())
    text = sum(map(sys.getsizeof, a.tokens)) + sys.getsizeof(a.strings) + sum(
        sys.getsizeof(k) + sys.getsizeof(v) for k, v in a.strings.items())
    assert a.nbytes == floor + text
    R, T, d = a.resid.shape
    assert a.nbytes > 2 * R * T * d * 4  # the residual rows and the cumulative projection curves dominate


def test_trim_cache_bounds_items_and_bytes(demo_session):
    an = [demo_session.analyze(p) for p in ("Mr. and Mrs.", "It is a truth", "Elizabeth")]
    cache = {i: a for i, a in enumerate(an)}
    result.trim_cache(cache, 3, max_bytes=an[1].nbytes + an[2].nbytes)
    assert list(cache) == [1, 2]
    result.trim_cache(cache, 3, max_bytes=1)
    assert list(cache) == [2]  # the newest always stays
    cache = {i: a for i, a in enumerate(an)}
    result.trim_cache(cache, 2)
    assert list(cache) == [1, 2]


def test_widget_cache_is_bounded_in_bytes(demo_session, monkeypatch):
    from resid_widgets.widgets.resid import ResidWidget

    monkeypatch.setattr(result, "CACHE_BYTES", 1)
    w = ResidWidget(Session(demo_session.model), "Mr. and Mrs.")
    try:
        w.lens = "jacobian"
        w.wait()
        w.lens = "logit"
        w.wait()
        assert len(w._queue._cache) == 1 and w.error == ""
    finally:
        w.close()


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(targets={" Bennet": 1}), TypeError, "not dict"),
    (dict(targets=[" Bennet"] * 65), ValueError, "at most 64"),
    (dict(top_k=True), TypeError, "top_k"),
    (dict(top_k=1.9), TypeError, "top_k"),
])
def test_widget_constructor_refuses_coercions(demo_session, kwargs, exc, match):
    from resid_widgets.widgets.resid import ResidWidget

    with pytest.raises(exc, match=match):
        ResidWidget(demo_session, "Mr. and Mrs.", **kwargs)


def test_widget_constructor_takes_one_target_string_as_one_target(demo_session):
    from resid_widgets.widgets.resid import ResidWidget

    w = ResidWidget(demo_session, "Mr. and Mrs.", targets=" Bennet")  # was split into its letters
    try:
        assert w.targets == [" Bennet"] and w.analysis.targets == [" Bennet"]
    finally:
        w.close()
