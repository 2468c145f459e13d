"""Analyses: plain functions over tensors that return numpy arrays (no Jupyter needed)."""

from resid_widgets.analyses.result import Analysis

__all__ = ["Analysis"]
