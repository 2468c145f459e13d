"""Model session: loading a model once, tokenising, one cached forward pass per prompt."""

from resid_widgets.session.loading import DEMO_MODEL_DIR, load_model
from resid_widgets.session.session import Session

__all__ = ["DEMO_MODEL_DIR", "Session", "load_model"]
