"""``resid-widgets attribute``: the printed top writers, the JSON arrays, and one-line errors (exit 2)."""

import json

import numpy as np

from resid_widgets.cli import main


def test_attribute_prints_and_writes_json(tmp_path, capsys, demo_session):
    from resid_widgets import AttributionRun

    out = tmp_path / "dla.json"
    assert main(["attribute", "Mr. and Mrs.", "--target", " Bennet", "--counterfactual", " Darcy", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    att = AttributionRun(demo_session, "Mr. and Mrs.").dla(" Bennet", " Darcy")
    data = json.loads(out.read_text())
    T = len(att.token_ids)
    assert data["labels"] == att.labels and data["labels"][:2] == ["L0H0", "L0H1"] and data["labels"][-3:] == ["embed", "pos_embed", "bias"]
    assert np.asarray(data["dla"]).shape == (len(att.labels), T)
    np.testing.assert_allclose(data["dla"], att.values, rtol=1e-5, atol=1e-6)
    assert data["token_ids"] == att.token_ids.tolist()
    lhs = np.asarray(data["dla"]).sum(0) + np.asarray(data["constant"])
    np.testing.assert_allclose(lhs, data["lens_value"], rtol=1e-4, atol=1e-4)
    best = att.top(1)[0][0]
    assert f"{best:>12}" in text and "lens" in text


def test_attribute_errors_exit_2_with_one_line(capsys):
    for argv, words in [
        (["attribute", "Mr. and Mrs.", "--target", " Bennet and"], "not one"),
        (["attribute", "Mr. and Mrs.", "--target", " Bennet", "--position", "99"], "position 99 is out of range"),
        (["attribute", "Mr. and Mrs.", "--target", " Bennet", "--row", "9"], "row 9 is out of range"),
        (["attribute", "  ", "--target", " Bennet"], "empty"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
