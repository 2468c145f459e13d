"""What every lens shares: the row convention, the model's own final readout, the file format.

A *lens* turns a residual-stream row into the vector that the model's own final readout is applied
to. Rows follow ``Session``: row 0 = ``blocks.0.hook_resid_pre`` (the embeddings), row l+1 =
``blocks.l.hook_resid_post``, so a model with L layers has R = L + 1 rows, and the last row is the
model's own final residual (every lens is the identity there). Reading a row out is always::

    logits = final_logits(model, lens.transform_rows(resid_rows, rows))
           = softcap(ln_final(v) @ W_U + b_U)     with v the lens's vector

The lenses here are per-row affine maps ``v = x @ M_r.T + c_r`` (the logit lens: M = I, c = 0; the
Jacobian lens: M = J_r, c = 0; the tuned lens: M = I + A_r, c = b_r).

For a LayerNorm model (``centre_input``) a lens first subtracts each row's mean: the final LayerNorm
cannot see a row's mean, compatibility-mode rows have none, and so a lens reads a raw (uncentred) row
exactly as the centred one, however its matrices were rounded.

Files: one ``.safetensors`` per lens, float16 by default. Tensors ``D.{row}`` = ``M_r - I`` (stored
as a difference from the identity so float16 rounds only the small part) and ``c.{row}``, for the
rows that are not the identity; the safetensors header's string metadata holds ``format``
(``resid_widgets.lens/1``), ``kind``, ``n_rows``, ``d_model``, ``centre_input`` ("0" or "1") and
``info`` (a JSON object with the model it was made for and how it was made).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from resid_widgets import hooks

FORMAT = "resid_widgets.lens/1"
KINDS = ("logit", "jacobian", "tuned")

Progress = Callable[[float, str], None]


# ---- model facts ------------------------------------------------------------------------------
def model_of(session_or_model: Any) -> Any:
    """The model behind a ``Session`` (anything with ``.model``) or the model itself."""
    model = getattr(session_or_model, "model", None)
    return model if model is not None and hasattr(model, "W_U") else session_or_model


def row_hook_names(n_layers: int) -> list[str]:
    """The hooks of the R = n_layers + 1 residual rows, in row order."""
    return hooks.residual_rows(n_layers)


def is_layernorm(model: Any) -> bool:
    """True when the final norm subtracts the mean (LayerNorm); False for RMSNorm / no norm."""
    return str(getattr(model.cfg, "normalization_type", None)) in ("LN", "LNPre")


def final_logits(model: Any, vectors: torch.Tensor) -> torch.Tensor:
    """The model's own final readout of ``vectors`` [..., d_model]: ``ln_final`` (recomputed per vector),
    ``W_U``, ``b_U`` and the adapter's output transform (logit soft-cap / scaling) when it has one.

    Applied to the model's last residual row this reproduces the model's logits. Gradients flow to
    ``vectors`` (the model's own weights are used as they are).
    """
    lead = vectors.shape[:-1]
    x = vectors.reshape(1, -1, vectors.shape[-1]).to(model.W_U.dtype)
    normed = model.ln_final(x)[0]
    logits = normed @ model.W_U
    b_U = getattr(model, "b_U", None)
    if b_U is not None:
        logits = logits + b_U
    transform = getattr(getattr(model, "adapter", None), "apply_output_logits_transform", None)
    if callable(transform):
        logits = transform(logits)
    else:  # TransformerLens <= 3 HookedTransformer: the soft-cap lives in the config
        cap = float(getattr(model.cfg, "output_logits_soft_cap", 0.0) or 0.0)
        if cap > 0:
            logits = cap * torch.tanh(logits / cap)
    return logits.float().reshape(*lead, -1)


def residual_rows(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    """One forward pass: the R residual rows of ``tokens`` [B, T] as float32 [R, B, T, d]."""
    names = row_hook_names(int(model.cfg.n_layers))
    wanted = set(names)
    device = model.W_U.device
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens.to(device), names_filter=lambda n: n in wanted)
    missing = [n for n in names if n not in cache]
    if missing:
        raise RuntimeError(
            f"the model's cache lacks {missing[:2]}...; TransformerBridge models need enable_compatibility_mode() "
            "(Session does this for the models it loads)"
        )
    return torch.stack([cache[n].float() for n in names]).clone()


def tokenize(model: Any, text: str | Sequence[int] | torch.Tensor, max_seq_len: int) -> torch.Tensor:
    """Token ids [T] of a text (BOS prepended the model's default way) or of given ids, truncated."""
    if isinstance(text, str):
        if not text.strip():
            raise ValueError("a prompt is empty")
        ids = model.to_tokens(text, truncate=False)[0]
    else:
        ids = torch.as_tensor(np.asarray(text.cpu() if isinstance(text, torch.Tensor) else text), dtype=torch.long)
        if ids.ndim != 1:
            raise ValueError("token ids must be 1-D")
    return ids[: min(int(max_seq_len), int(model.cfg.n_ctx))].cpu()


def check_rows(rows: slice | Sequence[int] | int, n_rows: int) -> list[int]:
    """Row indices (negative ones count from the end), validated."""
    if isinstance(rows, slice):
        return list(range(n_rows))[rows]
    if isinstance(rows, (int, np.integer)):
        rows = [int(rows)]
    out = []
    for r in rows:
        r = int(r)
        if not -n_rows <= r < n_rows:
            raise IndexError(f"row {r} is out of range for a lens with {n_rows} rows (0..{n_rows - 1})")
        out.append(r % n_rows)
    return out


# ---- the lens classes ---------------------------------------------------------------------------
class Lens:
    """A per-row affine lens ``v_r = x @ M_r.T + c_r`` over the R residual rows; the last row is the identity.

    ``matrices`` maps a row to its ``M_r`` [d, d] and ``offsets`` a row to its ``c_r`` [d]; a row in
    neither is the identity. ``info`` records provenance (model, corpus, seed, fit settings...).
    """

    kind: str = ""

    def __init__(
        self,
        n_rows: int,
        d_model: int,
        *,
        matrices: dict[int, torch.Tensor] | None = None,
        offsets: dict[int, torch.Tensor] | None = None,
        centre_input: bool = False,
        info: dict[str, Any] | None = None,
    ):
        if n_rows < 1 or d_model < 1:
            raise ValueError(f"a lens needs n_rows >= 1 and d_model >= 1, got {n_rows}, {d_model}")
        self.n_rows, self.d_model = int(n_rows), int(d_model)
        self.matrices: dict[int, torch.Tensor] = {}
        self.offsets: dict[int, torch.Tensor] = {}
        for name, src, shape, dst in (
            ("matrix", matrices, (d_model, d_model), self.matrices),
            ("offset", offsets, (d_model,), self.offsets),
        ):
            for row, t in (src or {}).items():
                row = int(row)
                if not 0 <= row < n_rows - 1:
                    raise ValueError(f"{self.kind} lens: a {name} for row {row}, but only rows 0..{n_rows - 2} can have one "
                                     f"(row {n_rows - 1} is the model's own output)")
                t = torch.as_tensor(t).detach().float().cpu()
                if tuple(t.shape) != shape:
                    raise ValueError(f"{self.kind} lens: the {name} of row {row} has shape {tuple(t.shape)}, expected {shape}")
                if not torch.isfinite(t).all():
                    raise ValueError(f"{self.kind} lens: the {name} of row {row} has non-finite values")
                dst[row] = t
        self.centre_input = bool(centre_input)
        self.info: dict[str, Any] = dict(info or {})
        self._on_device: dict[tuple, torch.Tensor] = {}

    # -- reading ----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.n_rows - 1

    def transform(self, resid: torch.Tensor) -> torch.Tensor:
        """``resid`` [R, ..., d] (all R rows) -> the vectors [R, ..., d] the model's final readout is applied to."""
        if resid.shape[0] != self.n_rows:
            raise ValueError(f"{self.kind} lens has {self.n_rows} rows but resid has {resid.shape[0]}; "
                             "use transform_rows for a subset")
        return self.transform_rows(resid, slice(None))

    def transform_rows(self, resid: torch.Tensor, rows: slice | Sequence[int] | int) -> torch.Tensor:
        """``resid`` [len(rows), ..., d] holds exactly the rows named by ``rows``, in that order;
        returns their lens vectors, same shape (float32, on resid's device)."""
        idx = check_rows(rows, self.n_rows)
        if resid.shape[0] != len(idx):
            raise ValueError(f"resid has {resid.shape[0]} rows but {len(idx)} rows were named")
        if resid.shape[-1] != self.d_model:
            raise ValueError(f"{self.kind} lens is for d_model={self.d_model}, resid ends in {resid.shape[-1]}")
        x = resid.float()
        out = torch.empty_like(x)
        for i, r in enumerate(idx):
            out[i] = self._apply(x[i], r)
        return out

    def _apply(self, x: torch.Tensor, row: int) -> torch.Tensor:
        if row not in self.matrices and row not in self.offsets:
            return x  # the identity, exactly
        if self.centre_input:
            x = x - x.mean(dim=-1, keepdim=True)
        M = self._get("M", row, self.matrices, x.device)
        y = x if M is None else x @ M.T
        c = self._get("c", row, self.offsets, x.device)
        return y if c is None else y + c

    def _get(self, tag: str, row: int, src: dict[int, torch.Tensor], device) -> torch.Tensor | None:
        t = src.get(row)
        if t is None:
            return None
        key = (tag, row, str(device))
        cached = self._on_device.get(key)
        if cached is None:
            cached = self._on_device[key] = t.to(device)
        return cached

    def fitted_rows(self) -> list[int]:
        """Rows that are not the identity."""
        return sorted(set(self.matrices) | set(self.offsets))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(rows={self.n_rows}, d_model={self.d_model}, fitted rows={self.fitted_rows()}, "
                f"centre_input={self.centre_input})")

    # -- checking against a model ----------------------------------------------------------------
    def check_model(self, session_or_model: Any) -> "Lens":
        """Raise a clear error if this lens cannot read ``session_or_model``'s residual rows."""
        model = model_of(session_or_model)
        n_layers, d_model = int(model.cfg.n_layers), int(model.W_U.shape[0])
        if (n_layers + 1, d_model) != (self.n_rows, self.d_model):
            made_for = self.info.get("model_name", "another model")
            raise ValueError(
                f"this {self.kind} lens was made for {made_for!r} ({self.n_rows - 1} layers, d_model {self.d_model}); "
                f"the model has {n_layers} layers and d_model {d_model}. Fit one for this model."
            )
        return self

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, dtype: torch.dtype = torch.float16) -> None:
        """Write the lens to one ``.safetensors`` file (see the module docstring for the layout)."""
        from safetensors.torch import save_file

        eye = torch.eye(self.d_model)
        tensors = {f"D.{r}": (m - eye).to(dtype).contiguous() for r, m in self.matrices.items()}
        tensors |= {f"c.{r}": c.to(dtype).contiguous() for r, c in self.offsets.items()}
        meta = {
            "format": FORMAT,
            "kind": self.kind,
            "n_rows": str(self.n_rows),
            "d_model": str(self.d_model),
            "centre_input": "1" if self.centre_input else "0",
            "info": json.dumps(self.info, sort_keys=True),
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *, session_or_model: Any = None) -> "Lens":
        """Read a lens file written by :meth:`save` (the subclass is chosen by the file's ``kind``).

        With ``session_or_model`` the lens is checked against that model (layers, width).
        ``JacobianLens.load`` also reads TransformerLens ``JacobianLens`` artifacts (``.pt``).
        """
        from resid_widgets.lenses import files

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no lens file at {path}")
        meta, entries = files.read_safetensors_header(path)  # shapes and dtypes only: nothing allocated yet
        kind, n_rows, d, centre, info = files.check_lens_header(
            path, meta, entries, wanted_kind=None if cls is Lens else cls.kind, session_or_model=session_or_model)
        from safetensors import safe_open

        matrices, offsets = {}, {}
        with safe_open(str(path), framework="pt") as f:
            for k in entries:
                row = int(k[2:])
                if k.startswith("D."):
                    m = f.get_tensor(k).float()
                    matrices[row] = m.add_(torch.eye(d))
                else:
                    offsets[row] = f.get_tensor(k).float()
        lens = _CLASSES[kind](n_rows, d, matrices=matrices, offsets=offsets, centre_input=centre, info=info)
        if session_or_model is not None:
            lens.check_model(session_or_model)
        return lens


class LogitLens(Lens):
    """The identity at every row: the model's final readout applied to each residual row as it is."""

    kind = "logit"

    @classmethod
    def for_model(cls, session_or_model: Any) -> "LogitLens":
        model = model_of(session_or_model)
        return cls(int(model.cfg.n_layers) + 1, int(model.W_U.shape[0]), info={"model_name": _model_name(session_or_model)})


_CLASSES: dict[str, type[Lens]] = {"logit": LogitLens}


def register(cls: type[Lens]) -> type[Lens]:
    _CLASSES[cls.kind] = cls
    return cls


def _model_name(session_or_model: Any) -> str:
    name = getattr(session_or_model, "name", None)
    if isinstance(name, str):
        return name
    model = model_of(session_or_model)
    return str(getattr(model.cfg, "model_name", None) or type(model).__name__)


def report(progress: Progress | None, fraction: float, stage: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), stage)


class frozen_parameters:
    """Model parameters get ``requires_grad=False`` inside the block (restored after), so gradients are
    rooted at the residual stream or at a lens's own parameters."""

    def __init__(self, model: Any):
        self.model = model
        self.saved: list[tuple[torch.nn.Parameter, bool]] = []

    def __enter__(self):
        self.saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in self.saved:
            p.requires_grad_(flag)
