"""Interventions: directions, steering, ablation, activation patching and continuations before | after.

    from resid_widgets.interventions import Steer, unembed_direction
    v = unembed_direction(session, " Darcy")
    after = session.analyze(prompt, intervention=Steer(v, layers=[1], alpha=8.0))
"""

from resid_widgets.interventions.core import (
    Ablate,
    AblateHead,
    AblateMLP,
    Combined,
    Intervention,
    Steer,
    as_intervention,
    reusable_prefix,
)
from resid_widgets.interventions.directions import (
    Direction,
    contrast_direction,
    jacobian_direction,
    task_vector_direction,
    unembed_direction,
    writer_direction,
)
from resid_widgets.interventions.generate import Continuation, continue_text
from resid_widgets.interventions.patching import PatchingResult, patch_resid, patching_experiment

__all__ = [
    "Ablate",
    "AblateHead",
    "AblateMLP",
    "Combined",
    "Continuation",
    "Direction",
    "Intervention",
    "PatchingResult",
    "Steer",
    "as_intervention",
    "contrast_direction",
    "continue_text",
    "jacobian_direction",
    "patch_resid",
    "patching_experiment",
    "reusable_prefix",
    "task_vector_direction",
    "unembed_direction",
    "writer_direction",
]
