"""Lenses beside the logit lens: the Jacobian lens and the tuned lens (issue 15).

A lens maps the R residual rows of a prompt ([R, T, d], compatibility-mode rows as ``Session``
builds them) to the vectors that the model's own final readout (``ln_final``, ``W_U``, ``b_U``,
soft-cap) is applied to; the last row is always the identity::

    lens = get_lens("jacobian", session)          # the shipped lens for the demo model, or path=...
    vectors = lens.transform(resid)               # [R, T, d]
    logits = final_logits(session.model, vectors) # [R, T, d_vocab]

Fit your own with :func:`fit_jacobian_lens` / :func:`train_tuned_lens`; ``lens.save(path)`` and
``Lens.load(path, session_or_model=...)`` round-trip them (one float16 ``.safetensors`` file);
``JacobianLens.load`` also reads TransformerLens / reference-implementation ``.pt`` artifacts, and
``Session.load_lens`` the tuned-lens package's directories (``resid_widgets.lenses.published``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from resid_widgets.lenses.base import KINDS, Lens, LogitLens, final_logits, row_hook_names
from resid_widgets.analyses.emergence import NEVER, emergence_rows
from resid_widgets.lenses.evaluate import kl_to_output, mean_kl_table
from resid_widgets.lenses.jacobian import JacobianLens, fit_jacobian_lens
from resid_widgets.lenses.tuned import TunedLens, collect_rows, train_tuned_lens

#: the lenses shipped for the embedded demo model (made by scripts/fit_demo_lenses.py)
DEMO_LENS_DIR = Path(__file__).resolve().parent.parent / "demo_model" / "lenses"
DEMO_LENS_FILES = {"jacobian": DEMO_LENS_DIR / "jacobian.safetensors", "tuned": DEMO_LENS_DIR / "tuned.safetensors"}


def get_lens(kind: str, session: Any, *, path: str | os.PathLike | None = None) -> Lens:
    """The lens of ``kind`` ("logit" | "jacobian" | "tuned") for ``session``'s model.

    ``path`` loads a lens file (ours, or a TransformerLens ``.pt`` artifact for "jacobian"); without
    it the demo model gets its shipped lenses (offline) and any other model needs a path or a fit.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown lens {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "logit":
        if path is not None:
            raise ValueError("the logit lens has no file; leave path out")
        return LogitLens.for_model(session)
    cls = JacobianLens if kind == "jacobian" else TunedLens
    if path is not None:  # ours, a tuned-lens directory or a TransformerLens artifact, checked before it is read
        from resid_widgets.lenses.published import load_lens_source

        return load_lens_source(path, session, kind=kind)
    if path is None:
        if not _is_demo(session):
            how = "fit_jacobian_lens(session, prompts)" if kind == "jacobian" else "train_tuned_lens(session, texts, steps=..., seed=0)"
            raise ValueError(
                f"no {kind} lens is known for {getattr(session, 'name', 'this model')!r}: pass path= to a saved lens "
                f"or make one with resid_widgets.lenses.{how} (only the demo model ships with lenses)"
            )
        path = DEMO_LENS_FILES[kind]
        if not path.is_file():
            raise FileNotFoundError(f"the demo model's {kind} lens is missing from {path}; "
                                    "rebuild it with `python scripts/fit_demo_lenses.py` or reinstall resid_widgets")
    return cls.load(path, session_or_model=session)


def _is_demo(session: Any) -> bool:
    """The embedded demo model, loaded by Session() or passed in as a model booted from its directory."""
    if getattr(session, "is_demo", False):
        return True
    from resid_widgets.session.loading import DEMO_MODEL_DIR

    name = str(getattr(session, "name", "") or "")
    try:
        return bool(name) and Path(name).resolve() == DEMO_MODEL_DIR
    except OSError:
        return False


__all__ = [
    "DEMO_LENS_DIR",
    "DEMO_LENS_FILES",
    "JacobianLens",
    "KINDS",
    "Lens",
    "LogitLens",
    "NEVER",
    "TunedLens",
    "collect_rows",
    "emergence_rows",
    "final_logits",
    "fit_jacobian_lens",
    "get_lens",
    "kl_to_output",
    "mean_kl_table",
    "row_hook_names",
    "train_tuned_lens",
]
