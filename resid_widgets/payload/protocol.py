"""The Python <-> browser protocol, defined once in ``protocol.json`` (the frontend bundles the same file).

It holds:

* ``metrics``: the heatmap's per-cell metrics, each one entry (its payload array, rows, availability
  rule, colour-scale kind, unit, labels, legend title and tooltip format). The menu, legend, tooltip,
  export, ``metric_values`` and the CompareWidget all loop over it.
* ``arrays``: every payload array (dtype, axis of positions, streamed stage, when it is sent); each
  has one computation in ``arrays.py``.
* ``traits``: ResidWidget's synced traits with defaults and limits (checked by ``contract.py``, for
  values set from Python and from the browser alike), ``messages`` and their fields, the ``header``
  fields, ``dtypes`` and the "not read yet" ``markers``.

A metric can also be registered at run time (``register_metric``): the payload header then carries
its entry (``extra_metrics`` / ``extra_arrays``), so the bundled frontend draws it without a rebuild.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

_SPEC: dict[str, Any] = json.loads((Path(__file__).with_name("protocol.json")).read_text(encoding="utf-8"))

PROTOCOL_VERSION: int = int(_SPEC["version"])
#: metric entries by name, in the order the metric menu shows them (``register_metric`` appends)
METRIC_SPECS: dict[str, dict[str, Any]] = {m["name"]: dict(m) for m in _SPEC["metrics"]}
#: heatmap metrics bundled with the package, in menu order (``METRIC_SPECS`` also holds those
#: registered at run time)
METRICS: tuple[str, ...] = tuple(METRIC_SPECS)
METRIC_LABELS: dict[str, str] = {m: s["label"] for m, s in METRIC_SPECS.items()}
#: payload array entries by name, in payload order
ARRAY_SPECS: dict[str, dict[str, Any]] = {a["name"]: dict(a) for a in _SPEC["arrays"]}
#: tau values whose projection % is sent with every view, so the tau slider needs no kernel.
TAU_GRID: tuple[float, ...] = tuple(float(t) for t in _SPEC["tau_grid"])
#: proj_grid stores round(pct * GRID_SCALE) in a uint8 (resolution 0.4 %).
GRID_SCALE: float = float(_SPEC["grid_scale"])
#: each payload array's axis of token positions (streamed deltas carry a range of it)
POSITION_AXIS: dict[str, int] = {n: int(a["position_axis"]) for n, a in ARRAY_SPECS.items()}
#: the lenses a view can ask for, and how they are named in titles
LENSES: tuple[str, ...] = tuple(_SPEC["lenses"])
LENS_LABELS: dict[str, str] = dict(_SPEC["lens_labels"])
#: synced traits: type, default, limits, and whether the browser may set them
TRAITS: dict[str, dict[str, Any]] = _SPEC["traits"]
MESSAGES: dict[str, dict[str, Any]] = _SPEC["messages"]
MESSAGES_TO_PYTHON: tuple[str, ...] = tuple(MESSAGES["to_python"])
MESSAGES_TO_BROWSER: tuple[str, ...] = tuple(MESSAGES["to_browser"])
DTYPES: dict[str, int] = dict(_SPEC["dtypes"])
#: names of the metrics and arrays registered at run time (sent in the header)
EXTRA: dict[str, list[str]] = {"metrics": [], "arrays": []}

_METRIC_FIELDS = {"name", "label", "array", "rows", "needs", "scale", "unit", "title", "tooltip", "tooltip_label"}
_SCALES = {"fixed", "robust", "diverging", "log_rank", "log"}
#: a metric's availability: always, with targets, with two targets, or with the sublayer outputs (attention / MLP
#: out), which a backend capturing only the residual stream lacks (the header's ``lacks``)
_NEEDS = {"", "targets", "two_targets", "sublayers"}


def metric_spec(name: str) -> dict[str, Any]:
    """The registry entry of metric ``name`` (ValueError naming the choices when unknown)."""
    try:
        return METRIC_SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown metric {name!r}; choose one of {', '.join(METRIC_SPECS)}") from None


def register_metric(metric: dict[str, Any], *, compute: Callable | None = None, array: dict[str, Any] | None = None) -> None:
    """Add a metric at run time: one registry entry (the fields of a ``protocol.json`` metric) and,
    when it reads a new array, that array's entry (``name``, ``dtype``, ``position_axis``, ``stage``,
    ``when``) and its computation ``compute(analysis, positions, ctx) -> ndarray`` (see ``arrays.py``).

    Example::

        register_metric(
            {"name": "half_prob", "label": "half top-1", "array": "half_prob", "rows": "all", "needs": "",
             "scale": "fixed", "range": [0, 1], "unit": "probability", "title": "half the top-1 probability",
             "tooltip": "{v}", "tooltip_label": "half top-1"},
            array={"name": "half_prob", "dtype": "float16", "position_axis": 1, "stage": "lens", "when": "always"},
            compute=lambda a, p, ctx: a.top_probs[:, p, 0] / 2,
        )
    """
    from resid_widgets.payload.arrays import ARRAY_COMPUTE

    missing = _METRIC_FIELDS - set(metric)
    if missing:
        raise ValueError(f"metric entry lacks {sorted(missing)}")
    if metric["scale"] not in _SCALES or metric["needs"] not in _NEEDS:
        raise ValueError(f"metric scale must be one of {sorted(_SCALES)} and needs one of {sorted(_NEEDS)}")
    name = metric["name"]
    if array is not None:
        if compute is None:
            raise ValueError("a new array needs its computation (compute=)")
        if array["dtype"] not in DTYPES and array["dtype"] != "index":
            raise ValueError(f"array dtype must be one of {sorted(DTYPES)} or 'index'")
        ARRAY_SPECS[array["name"]] = dict(array)
        POSITION_AXIS[array["name"]] = int(array["position_axis"])
        ARRAY_COMPUTE[array["name"]] = compute
        if array["name"] not in EXTRA["arrays"]:
            EXTRA["arrays"].append(array["name"])
    if metric["array"] not in ARRAY_SPECS:
        raise ValueError(f"metric {name!r} reads array {metric['array']!r}, which is not registered")
    METRIC_SPECS[name] = dict(metric)
    METRIC_LABELS[name] = metric["label"]
    if name not in EXTRA["metrics"]:
        EXTRA["metrics"].append(name)


def unregister_metric(name: str) -> None:
    """Remove a metric added by ``register_metric`` (and the array only it read)."""
    from resid_widgets.payload.arrays import ARRAY_COMPUTE

    if name not in EXTRA["metrics"]:
        raise ValueError(f"{name!r} was not registered at run time")
    spec = METRIC_SPECS.pop(name)
    METRIC_LABELS.pop(name, None)
    EXTRA["metrics"].remove(name)
    arr = spec["array"]
    if arr in EXTRA["arrays"] and not any(s["array"] == arr for s in METRIC_SPECS.values()):
        EXTRA["arrays"].remove(arr)
        ARRAY_SPECS.pop(arr, None)
        POSITION_AXIS.pop(arr, None)
        ARRAY_COMPUTE.pop(arr, None)


def extra_header() -> dict[str, Any]:
    """The header fields that carry run-time metrics ({} when there are none: payloads unchanged)."""
    if not EXTRA["metrics"]:
        return {}
    return {
        "extra_metrics": [METRIC_SPECS[m] for m in EXTRA["metrics"]],
        "extra_arrays": [ARRAY_SPECS[a] for a in EXTRA["arrays"]],
    }


__all__ = [
    "ARRAY_SPECS",
    "DTYPES",
    "GRID_SCALE",
    "LENSES",
    "LENS_LABELS",
    "MESSAGES",
    "MESSAGES_TO_BROWSER",
    "MESSAGES_TO_PYTHON",
    "METRICS",
    "METRIC_LABELS",
    "METRIC_SPECS",
    "POSITION_AXIS",
    "PROTOCOL_VERSION",
    "TAU_GRID",
    "TRAITS",
    "extra_header",
    "metric_spec",
    "register_metric",
    "unregister_metric",
]
