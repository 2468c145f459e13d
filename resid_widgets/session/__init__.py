"""Model session: loading a model once, tokenising, one cached forward pass per prompt."""

from typing import Any

from resid_widgets.session.loading import DEMO_MODEL_DIR, load_model
from resid_widgets.session.session import Session


def as_session(model_or_session: Any = None, *, device: str | None = None) -> Session:
    """A ``Session`` as given, or one made for a model (a TransformerLens model, a checkpoint name or
    folder; ``None``: the embedded demo model). Every widget takes either."""
    if isinstance(model_or_session, Session):
        return model_or_session
    return Session(model_or_session, device=device)


__all__ = ["DEMO_MODEL_DIR", "Session", "as_session", "load_model"]
