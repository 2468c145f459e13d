"""Interventions: forward hooks that change the residual stream while a session's forward pass runs.

With ``h`` [pos, d_model] the hooked activation at the chosen positions (all positions by default):

* ``Steer(v, layers, alpha)``            on ``blocks.{l}.hook_resid_post``: ``h ← h + α v``; with
                                          ``norm_match=True``: ``h ← h + α · median_pos ‖h‖ · v̂`` (the median
                                          over the steered positions of that layer's incoming ``h``, as
                                          TransformerLens's ``JacobianLens.steering_hooks`` and brainscope do);
                                          α = 0 installs no hook at all;
* ``Ablate(v, layers)``                   on ``blocks.{l}.hook_resid_post``: ``h ← h − (h·v̂) v̂`` (in float64);
* ``AblateHead(l, head, mode)``           on ``blocks.{l}.attn.hook_z`` [pos, head, d_head]: the head's z set to 0
                                          (``"zero"``) or to its mean over this prompt's positions (``"mean"``);
* ``AblateMLP(l, mode)``                  on ``blocks.{l}.hook_mlp_out``: the same for the MLP's output.

A list of interventions applies them all (hooks in list order). Layers and positions may be negative
(counted from the end); positions are absolute indices of the prompt. ``Session.analyze(...,
intervention=...)`` installs the hooks for one forward pass and always removes them (try/finally).

Prefix reuse: an edit of the previous prompt may reuse the earlier run's first n positions only where
both runs' activations are equal there, i.e. ``n ≤ first position either intervention touches``, and
n = 0 for interventions that couple positions (the norm-matched median, a mean ablation), unless both
runs have the same intervention and it does not couple positions (see ``reusable_prefix``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from resid_widgets import hooks
from resid_widgets.interventions.directions import as_direction, check_layer

Hook = tuple[str, Callable[..., Any]]
BIG = 1 << 62  # "no position is touched"


class Intervention:
    """Base class: what ``Session`` asks of an intervention."""

    #: True when a position's new value depends on other positions (a median or mean over positions)
    couples_positions: bool = False

    def check(self, session: Any, n_tokens: int) -> None:
        """Raise a clear error when this intervention cannot run on ``session`` for a prompt of ``n_tokens``."""

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        """``(hook name, fn)`` pairs for a forward pass over positions ``offset .. n_tokens - 1``."""
        raise NotImplementedError

    def first_position(self, n_tokens: int) -> int:
        """The first position whose activations this intervention may change (BIG: none)."""
        return 0

    def key(self) -> tuple:
        """Equal keys: the same hooks."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


def _check_layers(layers: int | Sequence[int], n_layers: int) -> list[int]:
    if isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("no layers given: name at least one layer to intervene at")
    return sorted({check_layer(l, n_layers) for l in layers})


def _check_positions(positions: Sequence[int] | None, n_tokens: int) -> list[int] | None:
    if positions is None:
        return None
    if isinstance(positions, (int, np.integer)) and not isinstance(positions, bool):
        positions = [positions]
    out = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise TypeError(f"positions must be integers, got {type(p).__name__}")
        if not -n_tokens <= int(p) < n_tokens:
            raise ValueError(f"position {p} is out of range for a prompt of {n_tokens} tokens (0..{n_tokens - 1})")
        out.append(int(p) % n_tokens)
    if not out:
        raise ValueError("positions is empty: give None (every position) or at least one position")
    return sorted(set(out))


def _local(positions: list[int] | None, offset: int, length: int) -> slice | list[int]:
    """The hooked tensor's indices (it holds positions offset .. offset + length - 1) of ``positions``."""
    if positions is None:
        return slice(None)
    return [p - offset for p in positions if offset <= p < offset + length]


def _replace(x: torch.Tensor, idx: slice | list[int], fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``x`` [batch, pos, ...] with the positions ``idx`` replaced by ``fn(x[:, idx])`` (a new tensor)."""
    if isinstance(idx, list) and not idx:
        return x
    out = x.clone()
    out[:, idx] = fn(x[:, idx]).to(x.dtype)
    return out


class _DirectionEdit(Intervention):
    """What Steer and Ablate share (fields ``direction``, ``layers``, ``positions``)."""

    direction: Any
    layers: Any
    positions: Any

    def __post_init__(self):
        object.__setattr__(self, "direction", as_direction(self.direction))

    def check(self, session: Any, n_tokens: int) -> None:
        self.direction.check_width(session.d_model)
        _check_layers(self.layers, session.n_layers)
        _check_positions(self.positions, n_tokens)

    def first_position(self, n_tokens: int) -> int:
        pos = _check_positions(self.positions, n_tokens)
        return 0 if pos is None else pos[0]

    def _hooks(self, session: Any, n_tokens: int, offset: int, edit: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> list[Hook]:
        pos = _check_positions(self.positions, n_tokens)
        unit = self.direction.unit.double().to(session.device)
        raw = self.direction.vector.double().to(session.device)

        def fn(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
            return _replace(x, _local(pos, offset, x.shape[1]), lambda h: edit(h.double(), unit if self._unit else raw))

        return [(hooks.resid_post(l), fn) for l in _check_layers(self.layers, session.n_layers)]

    _unit = True

    def _positions_key(self) -> tuple | None:
        return None if self.positions is None else tuple(np.atleast_1d(np.asarray(self.positions)).tolist())


@dataclass(frozen=True, eq=False)
class Steer(_DirectionEdit):
    """Add ``alpha · v`` (or ``alpha · median‖h‖ · v̂`` with ``norm_match``) to ``blocks.{l}.hook_resid_post``."""

    direction: Any
    layers: Any
    alpha: float = 1.0
    positions: Any = None
    norm_match: bool = False

    def __post_init__(self):
        super().__post_init__()
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float, np.integer, np.floating)):
            raise TypeError(f"alpha must be a number, got {type(a).__name__}")
        if not math.isfinite(float(a)):
            raise ValueError(f"alpha must be finite, got {a}")
        object.__setattr__(self, "alpha", float(a))
        object.__setattr__(self, "_unit", bool(self.norm_match))

    @property
    def couples_positions(self) -> bool:  # type: ignore[override]
        return bool(self.norm_match)

    def first_position(self, n_tokens: int) -> int:
        return BIG if self.alpha == 0 else super().first_position(n_tokens)

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        if self.alpha == 0:
            return []
        a = self.alpha
        if self.norm_match:
            edit = lambda h, u: h + a * torch.linalg.vector_norm(h, dim=-1).median() * u  # noqa: E731
        else:
            edit = lambda h, v: h + a * v  # noqa: E731
        return self._hooks(session, n_tokens, offset, edit)

    def key(self) -> tuple:
        if self.alpha == 0:
            return ()
        return ("steer", self.direction.key(), tuple(np.atleast_1d(self.layers).tolist()), self._positions_key(),
                self.alpha, self.norm_match)

    def describe(self) -> dict[str, Any]:
        return {"kind": "steer", "direction": self.direction.describe(), "layers": np.atleast_1d(self.layers).tolist(),
                "positions": None if self.positions is None else list(self._positions_key()), "alpha": self.alpha,
                "norm_match": self.norm_match,
                "formula": "h + alpha * median|h| * v/|v|" if self.norm_match else "h + alpha * v"}


@dataclass(frozen=True, eq=False)
class Ablate(_DirectionEdit):
    """Project ``v`` out of ``blocks.{l}.hook_resid_post``: ``h ← h − (h·v̂) v̂``."""

    direction: Any
    layers: Any
    positions: Any = None

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        return self._hooks(session, n_tokens, offset, lambda h, u: h - (h @ u)[..., None] * u)

    def key(self) -> tuple:
        return ("ablate", self.direction.key(), tuple(np.atleast_1d(self.layers).tolist()), self._positions_key())

    def describe(self) -> dict[str, Any]:
        return {"kind": "ablate", "direction": self.direction.describe(), "layers": np.atleast_1d(self.layers).tolist(),
                "positions": None if self.positions is None else list(self._positions_key()), "formula": "h - (h.v^) v^"}


_MODES = ("zero", "mean")


def _check_mode(mode: str) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be 'zero' or 'mean', not {mode!r}")
    return mode


def _ablate_fn(mode: str, select: Callable[[torch.Tensor], Any]) -> Callable[..., torch.Tensor]:
    def fn(x: torch.Tensor, hook: Any = None) -> torch.Tensor:
        out = x.clone()
        part = out[select(out)]  # advanced indexing: a copy
        if mode == "zero":
            out[select(out)] = 0.0
        else:  # the mean over this prompt's positions (dim 1 of [batch, pos, ...])
            out[select(out)] = part.mean(dim=1, keepdim=True).expand_as(part)
        return out

    return fn


class _ZeroOrMean:
    """What a zero- or mean-ablation shares: its ``mode`` is checked, and a mean over positions couples them (an
    edit cannot reuse the prefix's activations)."""

    mode: str

    def __post_init__(self):
        _check_mode(self.mode)

    @property
    def couples_positions(self) -> bool:
        return self.mode == "mean"


@dataclass(frozen=True)
class AblateHead(_ZeroOrMean, Intervention):
    """Zero- or mean-ablate one attention head's ``z`` (``blocks.{layer}.attn.hook_z``), at every position."""

    layer: int
    head: int
    mode: str = "zero"

    def check(self, session: Any, n_tokens: int) -> None:
        check_layer(self.layer, session.n_layers)
        n_heads = int(session.model.cfg.n_heads)
        if isinstance(self.head, bool) or not isinstance(self.head, (int, np.integer)) or not 0 <= self.head < n_heads:
            raise ValueError(f"head {self.head} is out of range: layer {self.layer} has {n_heads} heads (0..{n_heads - 1})")

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        h = int(self.head)
        return [(hooks.attn_z(check_layer(self.layer, session.n_layers)),
                 _ablate_fn(self.mode, lambda x: (slice(None), slice(None), h)))]

    def key(self) -> tuple:
        return ("head", int(self.layer), int(self.head), self.mode)

    def describe(self) -> dict[str, Any]:
        return {"kind": "ablate_head", "layer": int(self.layer), "head": int(self.head), "mode": self.mode}


@dataclass(frozen=True)
class AblateMLP(_ZeroOrMean, Intervention):
    """Zero- or mean-ablate one MLP's output (``blocks.{layer}.hook_mlp_out``), at every position."""

    layer: int
    mode: str = "zero"

    def check(self, session: Any, n_tokens: int) -> None:
        check_layer(self.layer, session.n_layers)

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        return [(hooks.mlp_out(check_layer(self.layer, session.n_layers)), _ablate_fn(self.mode, lambda x: (slice(None),)))]

    def key(self) -> tuple:
        return ("mlp", int(self.layer), self.mode)

    def describe(self) -> dict[str, Any]:
        return {"kind": "ablate_mlp", "layer": int(self.layer), "mode": self.mode}


class Combined(Intervention):
    """Several interventions at once (their hooks in order)."""

    def __init__(self, parts: Sequence[Intervention]):
        self.parts = list(parts)

    @property
    def couples_positions(self) -> bool:  # type: ignore[override]
        return any(p.couples_positions for p in self.parts)

    def check(self, session: Any, n_tokens: int) -> None:
        for p in self.parts:
            p.check(session, n_tokens)

    def hooks(self, session: Any, n_tokens: int, offset: int = 0) -> list[Hook]:
        return [h for p in self.parts for h in p.hooks(session, n_tokens, offset)]

    def first_position(self, n_tokens: int) -> int:
        return min((p.first_position(n_tokens) for p in self.parts), default=BIG)

    def key(self) -> tuple:
        return tuple(k for k in (p.key() for p in self.parts) if k)

    def describe(self) -> dict[str, Any]:
        return {"kind": "combined", "parts": [p.describe() for p in self.parts]}


def as_intervention(x: Any) -> Intervention | None:
    """None, an intervention, or a list of them -> one intervention (None when nothing is changed)."""
    if x is None:
        return None
    if isinstance(x, Intervention):
        return x
    if isinstance(x, (list, tuple)):
        parts = [as_intervention(p) for p in x]
        parts = [p for p in parts if p is not None]
        return None if not parts else parts[0] if len(parts) == 1 else Combined(parts)
    raise TypeError(
        f"intervention must be Steer, Ablate, AblateHead, AblateMLP (resid_widgets.interventions) or a list of them, "
        f"not {type(x).__name__}"
    )


def reusable_prefix(old: Intervention | None, new: Intervention | None, n_old: int, n_new: int) -> int:
    """How many leading positions of a run under ``old`` (``n_old`` tokens) a run under ``new`` may reuse
    (before the common-prefix limit): positions neither intervention touches, or every position when both
    are the same and do not couple positions."""
    k_old = old.key() if old is not None else ()
    k_new = new.key() if new is not None else ()
    if k_old == k_new and not (new is not None and new.couples_positions):
        return BIG
    first = lambda iv, n: BIG if iv is None or not iv.key() else iv.first_position(n)  # noqa: E731
    return min(first(old, n_old), first(new, n_new))


class installed:
    """``with installed(session, intervention, n_tokens, offset):`` the hooks on the session's model for one
    forward pass; removed on exit whatever happens."""

    def __init__(self, session: Any, intervention: Intervention | None, n_tokens: int, offset: int = 0):
        self.fwd = [] if intervention is None else intervention.hooks(session, n_tokens, offset)
        self.model = session.model
        self.ctx = None

    def __enter__(self):
        if self.fwd:
            self.ctx = self.model.hooks(fwd_hooks=self.fwd)
            self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            return self.ctx.__exit__(*exc)
        return False


__all__ = ["Ablate", "AblateHead", "AblateMLP", "Combined", "Intervention", "Steer", "as_intervention", "installed",
           "reusable_prefix"]
