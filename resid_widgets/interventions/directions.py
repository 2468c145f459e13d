"""Directions in the residual stream: what a steering or ablation intervention adds or removes.

A ``Direction`` is a plain object: a vector ``v`` [d_model] (float32, CPU) with a name, where it came
from (``source``), the layer it was read at (``layer``: the output of block ``layer``, i.e.
``blocks.{layer}.hook_resid_post``, residual row ``layer + 1``; None when it has no layer) and
JSON-able ``meta``. Constructors, for a session ``s`` with unembedding ``W_U`` [d_model, d_vocab]:

* ``unembed_direction(s, t)``         ``v = W_U[:, t]`` (in compatibility mode the final norm's weight is
                                       folded into ``W_U``: the direction the readout scores token t by);
* ``jacobian_direction(s, t, l)``     ``v = J_rᵀ W_U[:, t]`` with r = l + 1 (the session's Jacobian lens;
                                       ``P J_rᵀ W_U[:, t]`` with P the centring projector when the lens
                                       centres its input); the identity row gives ``W_U[:, t]``;
* ``contrast_direction(s, A, B, l)``  ``v = mean_{p∈A} h_l(p) − mean_{p∈B} h_l(p)``, h_l(p) the residual
                                       after block l at p's last token (or the mean over p's positions);
* ``task_vector_direction(tv, label, l)``  the mean of the centred task vectors of ``label`` at row l + 1;
* ``writer_direction(s, prompt, w, t)``  what attribution writer ``w`` wrote into the residual stream on
                                       ``prompt`` (``resid_widgets.analyses.attribution``): a head ``L{l}H{h}``,
                                       ``v = c_l post_l((z[l, t, h] − vb[l, h]) W_O[l, h])``, or an MLP
                                       ``{l}_mlp_out``, ``v = mlp_out[l, t]``, at position t, or with t = None
                                       its mean over the prompt's positions ``v = mean_t w[t]``;
* ``Direction.from_tensor(x)``        any tensor.

Every direction is checked: one dimension, finite, non-zero norm; ``check_width`` compares it with the
model. Files: one ``.safetensors`` with the tensor ``v`` and string metadata ``format``
(``resid_widgets.direction/1``), ``name``, ``source``, ``layer`` and ``meta`` (JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

FORMAT = "resid_widgets.direction/1"


@dataclass(frozen=True, eq=False)
class Direction:
    """A vector in the residual stream. ``vector`` [d_model] float32 on the CPU."""

    vector: torch.Tensor
    name: str = "direction"
    source: str = "tensor"
    layer: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        v = _as_vector(self.vector, self.name)
        object.__setattr__(self, "vector", v)
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def from_tensor(cls, x: Any, name: str = "custom", *, layer: int | None = None, **meta: Any) -> "Direction":
        """Any 1-D tensor, array or list of numbers."""
        return cls(x, name=name, source="tensor", layer=layer, meta=meta)

    @property
    def d_model(self) -> int:
        return int(self.vector.shape[0])

    @property
    def norm(self) -> float:
        return float(torch.linalg.vector_norm(self.vector.double()))

    @property
    def unit(self) -> torch.Tensor:
        """``v / ‖v‖`` [d_model] (float32; normalised in float64)."""
        v = self.vector.double()
        return (v / torch.linalg.vector_norm(v)).float()

    def check_width(self, d_model: int) -> "Direction":
        if self.d_model != int(d_model):
            raise ValueError(
                f"the direction {self.name!r} has width {self.d_model}, but the model's residual stream has d_model "
                f"{d_model}; build the direction from this model"
            )
        return self

    def key(self) -> tuple:
        """Identity of the vector's values (for caches keyed on an intervention)."""
        return (self.d_model, hashlib.sha1(self.vector.numpy().tobytes()).hexdigest())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "layer": self.layer, "norm": self.norm}

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``v`` and the metadata to one ``.safetensors`` file."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "name": self.name,
            "source": self.source,
            "layer": "" if self.layer is None else str(self.layer),
            "meta": json.dumps(self.meta, sort_keys=True, default=str),
        }
        save_file({"v": self.vector.contiguous()}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Direction":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no direction file at {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                v = f.get_tensor("v") if "v" in f.keys() else None
        except Exception as exc:
            raise ValueError(f"{path} is not a direction file (.safetensors): {exc}") from exc
        if meta.get("format") != FORMAT or v is None:
            raise ValueError(f"{path} is not a resid_widgets direction file (format {meta.get('format')!r}, expected {FORMAT!r})")
        layer = meta.get("layer", "")
        return cls(v, name=meta.get("name", "direction"), source=meta.get("source", "tensor"),
                   layer=int(layer) if layer else None, meta=json.loads(meta.get("meta", "{}")))

    def __repr__(self) -> str:
        where = "" if self.layer is None else f", layer={self.layer}"
        return f"Direction({self.name!r}, source={self.source!r}{where}, d_model={self.d_model}, norm={self.norm:.4g})"


def as_direction(x: Any, name: str = "custom") -> Direction:
    return x if isinstance(x, Direction) else Direction.from_tensor(x, name)


def _as_vector(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu")
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a direction must be a 1-D tensor of numbers, not {type(x).__name__}") from exc
    if t.ndim != 1:
        raise ValueError(f"the direction {name!r} must be one vector [d_model], got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise ValueError(f"the direction {name!r} is empty")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"the direction {name!r} must hold real numbers, got {t.dtype}")
    bad = (~torch.isfinite(t.double())).nonzero().flatten()
    if bad.numel():
        raise ValueError(f"the direction {name!r} has non-finite values (NaN or inf) at indices {bad[:5].tolist()}")
    t = t.float().contiguous()
    if float(torch.linalg.vector_norm(t.double())) == 0.0:
        raise ValueError(f"the direction {name!r} is zero (norm 0): it has no direction to steer along or remove")
    return t.clone()


def check_layer(layer: int, n_layers: int, what: str = "layer") -> int:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, got {type(layer).__name__}")
    if not -n_layers <= int(layer) < n_layers:
        raise ValueError(f"{what} {layer} is out of range: the model has {n_layers} layers (0..{n_layers - 1})")
    return int(layer) % n_layers


def _token_id(session: Any, token: str | int) -> tuple[str, int]:
    names, ids = session.resolve_targets([token])
    return names[0], ids[0]


def unembed_direction(session: Any, token: str | int) -> Direction:
    """``W_U[:, t]`` [d_model]: the token's unembedding column."""
    name, t = _token_id(session, token)
    v = session.model.W_U.detach()[:, t].float().cpu()
    return Direction(v, name=name, source="unembed", meta={"token_id": t, "model_name": session.name})


def jacobian_direction(session: Any, token: str | int, layer: int, *, lens: Any = None) -> Direction:
    """``J_rᵀ W_U[:, t]`` at row r = layer + 1 (the residual after block ``layer``): the direction whose
    addition there raises token t's lens logit most (to first order, before the final norm).

    ``lens`` defaults to the session's Jacobian lens (the demo model's shipped one, or what
    ``fit_lens``/``load_lens`` gave)."""
    layer = check_layer(layer, session.n_layers)
    name, t = _token_id(session, token)
    lens = session._resolve_lens("jacobian") if lens is None else lens
    row = layer + 1
    u = session.model.W_U.detach()[:, t].double().cpu()
    M = getattr(lens, "matrices", {}).get(row)
    v = u if M is None else M.double().T @ u
    if getattr(lens, "centre_input", False):
        v = v - v.mean()
    return Direction(v.float(), name=name, source="jacobian", layer=layer,
                     meta={"token_id": t, "row": row, "model_name": session.name, "lens": dict(getattr(lens, "info", {}))})


def contrast_direction(
    session: Any,
    positive: Sequence[Any],
    negative: Sequence[Any],
    layer: int,
    *,
    position: str = "last",
    name: str = "contrast",
) -> Direction:
    """``mean_{p∈positive} h_l(p) − mean_{p∈negative} h_l(p)``: h_l(p) the residual after block ``layer``
    (``blocks.{layer}.hook_resid_post``) at p's last token (``position="last"``) or averaged over p's
    positions (``"mean"``). One forward pass per prompt, no lens readout."""
    from resid_widgets import hooks

    layer = check_layer(layer, session.n_layers)
    if position not in ("last", "mean"):
        raise ValueError(f"position must be 'last' or 'mean', not {position!r}")
    groups = []
    for label, prompts in (("positive", positive), ("negative", negative)):
        if isinstance(prompts, str) or len(prompts) == 0:
            raise ValueError(f"contrast_direction needs a non-empty list of {label} prompts")
        vecs = []
        for p in prompts:
            ids, _ = session.to_token_ids(p)
            h = _resid_at(session, ids, hooks.resid_post(layer))  # [T, d]
            vecs.append(h[-1] if position == "last" else h.mean(0))
        groups.append(torch.stack(vecs).double().mean(0))
    v = (groups[0] - groups[1]).float()
    return Direction(v, name=name, source="contrast", layer=layer,
                     meta={"positive": [str(p) for p in positive], "negative": [str(p) for p in negative],
                           "position": position, "model_name": session.name})


def _resid_at(session: Any, ids: np.ndarray, hook: str) -> torch.Tensor:
    with session._lock, torch.inference_mode():
        _, cache = session.model.run_with_cache(torch.as_tensor(ids)[None].to(session.device), names_filter=lambda n: n == hook)
    return cache[hook][0].float().cpu()


def task_vector_direction(task_vectors: Any, label: str, layer: int) -> Direction:
    """The mean centred task vector of the prompts labelled ``label`` at row layer + 1 (the residual after
    block ``layer``; ``layer=-1`` is the last block), from ``compute_task_vectors`` or a ``TaskVectorExplorer``
    (its ``.task_vectors``)."""
    tv = getattr(task_vectors, "task_vectors", task_vectors)
    labels = np.asarray(tv.labels, dtype=object)
    if label not in set(tv.labels):
        raise ValueError(f"no prompt is labelled {label!r}; labels are {tv.unique_labels}")
    layer = check_layer(layer, tv.n_rows - 1)
    v = np.asarray(tv.vectors[labels == label, layer + 1], dtype=np.float64).mean(0)
    return Direction(v, name=f"task:{label}", source="task_vector", layer=layer,
                     meta={"label": label, "n_prompts": int((labels == label).sum())})


_WRITER = re.compile(r"L(\d+)H(\d+)|(\d+)_mlp_out")


def writer_direction(session: Any, prompt: Any, writer: str, position: int | None = None) -> Direction:
    """What attribution writer ``writer`` (``L{l}H{h}``: a head, ``{l}_mlp_out``: an MLP; the attribution
    module's labels) wrote into the residual stream on ``prompt``: its output [d_model] at ``position``, or
    its mean over the prompt's positions (``position=None``). One forward pass (``AttributionRun``)."""
    from resid_widgets.analyses import attribution as A
    from resid_widgets.session.attribution import AttributionRun

    m = _WRITER.fullmatch(writer.strip()) if isinstance(writer, str) else None
    if m is None:
        raise ValueError(f"a writer is a head L{{layer}}H{{head}} or an MLP {{layer}}_mlp_out (e.g. L0H1, 1_mlp_out), got {writer!r}")
    layer = check_layer(int(m[1] if m[1] is not None else m[3]), session.n_layers, "the writer's layer")
    run = AttributionRun(session, prompt)
    label = writer.strip()
    if label not in run.labels:
        heads = run.weights.n_heads
        raise ValueError(f"this model has no writer {label!r} (heads 0..{heads - 1} per layer"
                         f"{'' if run.writers.mlp_out is not None else ', no MLPs'})")
    pos = A.check_positions(position, run.writers.n_positions)
    if m[1] is not None:
        vecs = A.head_vectors(run.writers, run.weights, layer, pos)[int(m[2])]  # [P, d]
    else:
        vecs = run.writers.mlp_out[layer][pos].float()  # as decompose() has it
    v = vecs.double().mean(0) if position is None else vecs[0].double()
    return Direction(v.float().cpu(), name=label, source="writer", layer=layer,
                     meta={"position": None if position is None else int(pos[0]), "reduce": "mean" if position is None else "at",
                           "prompt": prompt if isinstance(prompt, str) else None, "model_name": session.name})


__all__ = [
    "Direction",
    "as_direction",
    "check_layer",
    "contrast_direction",
    "jacobian_direction",
    "task_vector_direction",
    "unembed_direction",
    "writer_direction",
]
