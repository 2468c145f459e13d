"""The terminal command: the lens table, the summaries, --json, and clear errors."""

import json

import numpy as np

from resid_widgets.cli import main


def test_analyze_prints_table_and_writes_json(tmp_path, capsys, demo_session):
    out = tmp_path / "lens.json"
    assert main(["analyze", "Mr. and Mrs.", "--top-k", "3", "--targets", " Bennet", " Darcy", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    a = demo_session.analyze("Mr. and Mrs.", top_k=3, targets=[" Bennet", " Darcy"])
    # the table's last row holds the final layer's top-1 tokens, whitespace made visible
    last_line = [line for line in text.splitlines() if line.startswith(a.row_labels[-1] + " ")][0]
    assert a.top_tokens[-1, -1, 0].replace(" ", "·") in last_line
    assert "projection onto the token subspace" in text and f"k={a.k}" in text
    data = json.loads(out.read_text())
    assert data["tokens"] == a.tokens and data["targets"] == [" Bennet", " Darcy"]
    np.testing.assert_allclose(data["top_probs"], a.top_probs, rtol=1e-5)
    np.testing.assert_array_equal(data["target_ranks"], a.target_ranks)
    np.testing.assert_allclose(data["projection_pct"], a.projection_pct, rtol=1e-5)


def test_bad_input_exits_2_with_a_message(capsys):
    assert main(["analyze", "  "]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["analyze", "Hi", "--targets", " Bennet and"]) == 2
    assert "not one" in capsys.readouterr().err
    assert main(["analyze", "Hi", "--tau", "2"]) == 2
    assert "tau" in capsys.readouterr().err


def test_lens_option(tmp_path, capsys, demo_session):
    out = tmp_path / "tuned.json"
    assert main(["analyze", "Mr. and Mrs.", "--top-k", "3", "--lens", "tuned", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lens: tuned" in text and "KL nats" in text
    a = demo_session.analyze("Mr. and Mrs.", top_k=3, lens="tuned")
    data = json.loads(out.read_text())
    np.testing.assert_allclose(data["kl"], a.kl, rtol=1e-4, atol=1e-4)  # float32, two runs
    np.testing.assert_array_equal(data["emergence_row"], a.emergence_row)
    assert main(["analyze", "Mr. and Mrs.", "--lens", "sideways"]) == 2
    assert "unknown lens" in capsys.readouterr().err


def test_progress_bar_ends_its_line_before_the_table(monkeypatch, demo_session):
    """Issue 19.12: with stdout and stderr on one terminal, the table's header starts on a line of its own,
    and the bar shows a percentage, never a rate in "%/s"."""
    import contextlib
    import functools
    import io

    from resid_widgets import cli

    # no delay (the real one is 0.5 s): the bar is drawn however fast the analysis is (a warm demo model
    # can finish within a short delay, and then no bar is drawn at all)
    monkeypatch.setattr(cli, "_progress_bar", functools.partial(cli._progress_bar, delay=0.0))
    both = io.StringIO()
    with contextlib.redirect_stdout(both), contextlib.redirect_stderr(both):
        assert main(["analyze", "Mr. and Mrs.", "--top-k", "3"]) == 0
    text = both.getvalue()
    assert "100%" in text, text[:300]  # the bar was drawn
    assert "%/s" not in text and "it/s" not in text
    header = [line for line in text.split("\n") if "layer" in line and "Mrs" in line]
    assert header, text[:500]
    assert header[0].lstrip("\r").startswith("layer"), repr(header[0][:120])
