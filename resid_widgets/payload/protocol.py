"""The Python <-> browser protocol, defined once in ``protocol.json`` (the frontend bundles the same file).

Version, metric list, the tau grid whose projection % travels with every view, the uint8 scale of
that grid, and the custom message types. Everything else in the header is built by ``encode.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

_SPEC = json.loads((Path(__file__).with_name("protocol.json")).read_text(encoding="utf-8"))

PROTOCOL_VERSION: int = int(_SPEC["version"])
#: heatmap metrics, in the order the metric menu shows them.
METRICS: tuple[str, ...] = tuple(m["name"] for m in _SPEC["metrics"])
METRIC_LABELS: dict[str, str] = {m["name"]: m["label"] for m in _SPEC["metrics"]}
#: tau values whose projection % is sent with every view, so the tau slider needs no kernel.
TAU_GRID: tuple[float, ...] = tuple(float(t) for t in _SPEC["tau_grid"])
#: proj_grid stores round(pct * GRID_SCALE) in a uint8 (resolution 0.4 %).
GRID_SCALE: float = float(_SPEC["grid_scale"])
#: each payload array's axis of token positions (streamed deltas carry a range of it)
POSITION_AXIS: dict[str, int] = {k: int(v) for k, v in _SPEC["position_axis"].items()}
#: the lenses a view can ask for
LENSES: tuple[str, ...] = tuple(_SPEC["lenses"])
MESSAGES_TO_PYTHON: tuple[str, ...] = tuple(_SPEC["messages"]["to_python"])
MESSAGES_TO_BROWSER: tuple[str, ...] = tuple(_SPEC["messages"]["to_browser"])

__all__ = ["PROTOCOL_VERSION", "METRICS", "METRIC_LABELS", "TAU_GRID", "GRID_SCALE", "POSITION_AXIS", "LENSES", "MESSAGES_TO_PYTHON", "MESSAGES_TO_BROWSER"]
