"""resid_widgets: the residual stream of a transformer, live in the notebook.

The flow, one folder per step::

    session/   (model loading, tokenisation, one cached forward pass)
      -> analyses/  (plain functions over tensors -> numpy arrays: lens, projection, norms)
      -> payload/   (compact binary encoding for the browser)
      -> widgets/   (anywidget / ipywidgets + bqplot classes)
      -> js/        (TypeScript views, bundled into resid_widgets/static/)

Importing this package is cheap: torch, TransformerLens and the widget libraries are imported on
first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from resid_widgets._version import __version__

_LAZY = {
    "Session": "resid_widgets.session",
    "load_model": "resid_widgets.session",
    "DEMO_MODEL_DIR": "resid_widgets.session",
    "Analysis": "resid_widgets.analyses",
    "ResidWidget": "resid_widgets.widgets",
    "ProjectionExplorer": "resid_widgets.widgets",
    "LogitDiffExplorer": "resid_widgets.widgets",
    "TaskVectorExplorer": "resid_widgets.widgets",
    "ContributionExplorer": "resid_widgets.widgets",
    "CompareWidget": "resid_widgets.widgets",
    "LensKLExplorer": "resid_widgets.widgets",
    "AttributionExplorer": "resid_widgets.widgets",
    "AttributionPanel": "resid_widgets.widgets",
    "AttributionRun": "resid_widgets.session.attribution",
    "PatchingWidget": "resid_widgets.widgets",
    "SteeringWidget": "resid_widgets.widgets",
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # pragma: no cover
    from resid_widgets.analyses import Analysis
    from resid_widgets.session import DEMO_MODEL_DIR, Session, load_model
    from resid_widgets.session.attribution import AttributionRun
    from resid_widgets.widgets import (
        AttributionExplorer,
        AttributionPanel,
        CompareWidget,
        ContributionExplorer,
        LensKLExplorer,
        LogitDiffExplorer,
        PatchingWidget,
        ProjectionExplorer,
        ResidWidget,
        SteeringWidget,
        TaskVectorExplorer,
    )


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resid_widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
