"""A metric registered at run time (half the top-1 probability): one definition for the registry's tests in Python
(tests/test_contract.py) and in the browser (tests/ui/test_registry_browser.py)."""

TOY = {
    "name": "toy_half_prob", "label": "toy: half top-1", "array": "toy_half_prob", "rows": "all", "needs": "",
    "scale": "fixed", "range": [0, 0.5], "ticks": [0, 0.25, 0.5], "unit": "half-probability",
    "title": "half the top-1 probability ({lens_label})", "tooltip": "{v} (half of {top1})", "tooltip_label": "toy half",
}
TOY_ARRAY = {"name": "toy_half_prob", "dtype": "float16", "position_axis": 1, "stage": "lens", "when": "always"}
