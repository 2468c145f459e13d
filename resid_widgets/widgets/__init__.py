"""Widgets: anywidget / ipywidgets classes over a Session (imported on first use)."""

from __future__ import annotations

import importlib

_LAZY = {
    "ResidWidget": "resid_widgets.widgets.resid",
    "ProjectionExplorer": "resid_widgets.widgets.projection",
    "LogitDiffExplorer": "resid_widgets.widgets.logit_diff",
    "TaskVectorExplorer": "resid_widgets.widgets.task_vectors",
    "ContributionExplorer": "resid_widgets.widgets.contributions",
    "CompareWidget": "resid_widgets.widgets.compare",
    "LensKLExplorer": "resid_widgets.widgets.lens_kl",
    "AttributionExplorer": "resid_widgets.widgets.attribution",
    "AttributionPanel": "resid_widgets.widgets.attribution_panel",
    "PatchingWidget": "resid_widgets.widgets.patching",
    "SteeringWidget": "resid_widgets.widgets.steering",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resid_widgets.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
