"""The staged analysis of one prompt: what ``Session.analyze``, ``Session.analyze_batch`` and the
widget all run.

Stages (each yields an ``Update`` that a widget can send to the browser at once)::

    begin  the forward pass's activations -> norms, additivity, projection % (cumulative curves: any tau),
           the final row's lens (the model's own logits);                         ~ one forward pass
    lens   the other rows' lens readout, a block of positions at a time, the positions in view first;
    done   emergence rows; the Analysis is complete.

Positions before ``keep`` may be taken from a ``base`` analysis of a prompt with the same prefix (an
edit): a causal model's activations there are unchanged, so only the new positions are computed.
The Analysis is allocated once at ``begin``; later stages fill its arrays in place (lens cells not
read yet hold -1 / NaN), so the object a widget holds is always the latest state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch

from resid_widgets.analyses.emergence import emergence_rows
from resid_widgets.analyses.lens import DEFAULT_CHUNK_ELEMENTS, READOUT_FIELDS, FinalReadout, Reference, Workspace, read_block
from resid_widgets.analyses.norms import additivity_from_parts
from resid_widgets.analyses.projection import TokenSubspace, cumulative_fraction, pct_at_k
from resid_widgets.analyses.result import Analysis

#: what an unread lens cell holds until its block is read
UNREAD_ID = -1


class Cancelled(Exception):
    """A newer request superseded this one; raised between stages and blocks."""


class Lens(Protocol):
    """A readout's transport of residual rows before the model's own final readout (logit lens: none)."""

    kind: str

    def transform_rows(self, resid: torch.Tensor, rows: Sequence[int]) -> torch.Tensor: ...


@dataclass
class Activations:
    """One prompt's forward pass, reduced to what the analyses read (every position)."""

    ids: np.ndarray  # [T]
    resid: torch.Tensor  # [R, T, d] float32: row 0 resid_pre of block 0, row l+1 resid_post of block l
    final_norm: torch.Tensor  # [T, d] ln_final.hook_normalized
    attn_norm: np.ndarray  # [L, T]
    mlp_norm: np.ndarray  # [L, T]
    add_keys: tuple[str, ...]  # the block's residual identities
    add_diff: np.ndarray  # [K, L, T]
    add_scale: np.ndarray  # [K, L, T]
    logits: torch.Tensor  # [T - start, V] the model's output at positions start..T-1
    start: int = 0  # positions before it came from an earlier forward pass (prefix reuse)

    @property
    def n_tokens(self) -> int:
        return int(self.resid.shape[1])

    def with_prefix(self, prev: "Activations", n: int) -> "Activations":
        """These activations (positions n.. of a prompt) behind ``prev``'s first n positions."""
        if n == 0:
            return self
        cat = lambda a, b, axis: np.concatenate([a[..., :n] if axis == -1 else a[:, :n], b], axis=axis)  # noqa: E731
        return Activations(
            ids=np.concatenate([prev.ids[:n], self.ids]),
            resid=torch.cat([prev.resid[:, :n], self.resid], dim=1),
            final_norm=torch.cat([prev.final_norm[:n], self.final_norm], dim=0),
            attn_norm=cat(prev.attn_norm, self.attn_norm, -1),
            mlp_norm=cat(prev.mlp_norm, self.mlp_norm, -1),
            add_keys=self.add_keys,
            add_diff=cat(prev.add_diff, self.add_diff, -1),
            add_scale=cat(prev.add_scale, self.add_scale, -1),
            logits=self.logits,
            start=n,
        )


@dataclass(frozen=True)
class Request:
    """What to compute for one prompt."""

    prompt: str | None
    ids: np.ndarray
    added_bos: bool
    top_k: int
    target_names: list[str]
    target_ids: list[int]
    tau: float
    lens: Lens | None = None  # None: the logit lens
    intervention: Any = None  # resid_widgets.interventions: the hooks the forward pass ran under

    @property
    def lens_kind(self) -> str:
        return "logit" if self.lens is None else self.lens.kind

    def readout_key(self) -> tuple:
        """Two requests with the same key read the lens cells identically."""
        return (self.top_k, tuple(self.target_ids), self.lens_kind, id(self.lens))


@dataclass
class Update:
    stage: str  # "begin" | "lens" | "done"
    analysis: Analysis
    positions: tuple[int, int]  # begin: the positions with new values [keep, T); lens: the block read
    keep: int = 0  # begin: positions [0, keep) equal the base analysis' (every array)
    fraction: float = 0.0
    base: Analysis | None = None  # begin: the analysis those kept positions come from


@dataclass
class Context:
    """What the stages need from the session besides the activations."""

    model_name: str
    readout: FinalReadout
    subspace: TokenSubspace
    strings: Callable[[np.ndarray], dict[int, str]]
    info: dict[str, Any]
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    cancelled: Callable[[], bool] = field(default=lambda: False)


def run_stages(
    acts: Activations,
    req: Request,
    ctx: Context,
    *,
    base: Analysis | None = None,
    base_key: tuple | None = None,
    view: tuple[int, int] | None = None,
) -> Iterator[Update]:
    """The stages of one prompt's analysis (see the module docstring): ``begin``, then ``lens_blocks``,
    then ``done``.

    ``base`` is the analysis whose first ``acts.start`` positions these activations share (its
    lens cells are reused when ``base_key == req.readout_key()``); ``view`` = positions [a, b)
    read first.
    """
    state = begin(acts, req, ctx, base=base, base_key=base_key)
    yield Update("begin", state.analysis, (state.keep, acts.n_tokens), keep=state.keep, fraction=0.1, base=base if state.keep else None)
    yield from lens_blocks(acts, req, ctx, state, view)
    yield done(req, state)


@dataclass
class _Run:
    """What the stages of one run share: the analysis being filled and the readout's state."""

    analysis: Analysis
    arrays: dict[str, np.ndarray]  # the lens arrays (READOUT_FIELDS), filled in place
    reference: Reference  # the model's own distribution at positions lo..T-1
    workspace: Workspace
    strings: dict[int, str]
    keep: int  # positions [0, keep) reused from the base analysis (every array)
    lo: int  # first position whose lens cells are read in this run


def begin(acts: Activations, req: Request, ctx: Context, *, base: Analysis | None = None, base_key: tuple | None = None) -> _Run:
    """Norms, additivity, projection % (cumulative curves: any tau) and the final row's lens (the
    model's own logits): the Analysis, allocated once, its other lens cells unread (-1 / NaN)."""
    T, R = acts.n_tokens, int(acts.resid.shape[0])
    start = acts.start if base is not None else 0
    keep = start if (start and base_key == req.readout_key()) else 0
    _check(ctx)
    sub = ctx.subspace
    proj_new = cumulative_fraction(acts.resid[:, start:], sub.U).numpy(force=True)
    final_new = cumulative_fraction(acts.final_norm[start:].float(), sub.U).numpy(force=True)
    if start:
        proj_cum = np.concatenate([base._proj_cum[:, :start], proj_new], axis=1)
        final_cum = np.concatenate([base._proj_final_cum[:start], final_new], axis=0)
    else:
        proj_cum, final_cum = proj_new, final_new
    k = sub.k_for_tau(req.tau)

    lens_arrays = _allocate(R, T, req.top_k, len(req.target_ids))
    if keep:
        for name in READOUT_FIELDS:
            lens_arrays[name][:, :keep] = getattr(base, name)[:, :keep]
    workspace = Workspace()  # the readout's [chunk, vocab] buffers, reused by every block
    reference = _final_row(acts, req, ctx, lens_arrays, keep, start, workspace)
    info = _formula_check(acts, ctx)
    if req.intervention is not None:
        info["intervention"] = req.intervention.describe()
    strings: dict[int, str] = dict(base.strings) if start else {}
    strings.update(ctx.strings(np.concatenate([acts.ids, lens_arrays["top_ids"][R - 1].reshape(-1), req.target_ids])))
    analysis = Analysis(
        prompt=req.prompt,
        model_name=ctx.model_name,
        hook_names=_row_names(R),
        tokens=[strings[int(i)] for i in acts.ids],
        token_ids=acts.ids,
        is_bos=np.array([req.added_bos and i == 0 for i in range(T)]),
        **lens_arrays,
        targets=list(req.target_names),
        target_ids=list(req.target_ids),
        tau=req.tau,
        k=k,
        singular_values=sub.singular_values,
        cumulative_energy=sub.cumulative_energy,
        projection_pct=pct_at_k(proj_cum, k),
        projection_final_pct=pct_at_k(final_cum, k),
        resid_norm=torch.linalg.vector_norm(acts.resid, dim=-1).numpy(force=True),
        attn_norm=acts.attn_norm,
        mlp_norm=acts.mlp_norm,
        additivity=additivity_from_parts(acts.add_keys, acts.add_diff, acts.add_scale),
        strings=strings,
        lens=req.lens_kind,
        emergence_row=np.full(T, -1, np.int32),
        target_emergence=np.full((T, len(req.target_ids)), -1, np.int32),
        info=info,
        _proj_cum=proj_cum,
        _proj_final_cum=final_cum,
        _resid=acts.resid.numpy(force=True),  # force: GPU tensors come back to the host
    )
    return _Run(analysis, lens_arrays, reference, workspace, strings, keep, keep)


def _final_row(acts: Activations, req: Request, ctx: Context, lens_arrays: dict, lo: int, start: int, workspace: Workspace) -> Reference:
    """Read the final row (the model's own output) for positions lo..T-1 into ``lens_arrays``; the
    model's output distribution there, for the other rows' KL and final rank. Its logits are at hand
    for the new positions; for a reused prefix read with another readout (other targets), the
    formula gives the same logits."""
    R = int(acts.resid.shape[0])
    final_logits = acts.logits
    if lo < start:
        extra = ctx.readout.logits(ctx.readout.normalise(acts.resid[-1, lo:start]))
        final_logits = torch.cat([extra, acts.logits], dim=0)
    last = read_block(
        acts.final_norm[lo:, None].float(),  # unused: known logits
        ctx.readout,
        top_k=req.top_k,
        target_ids=req.target_ids,
        known_logits=final_logits[:, None],
        chunk_elements=ctx.chunk_elements,
        workspace=workspace,
    )
    for name, arr in last.items():
        lens_arrays[name][R - 1, lo:] = arr[:, 0]
    own_distribution(lens_arrays, R - 1, slice(lo, None))
    return Reference.from_readout(final_logits, last)  # positions lo..T-1, from the row just read


def _formula_check(acts: Activations, ctx: Context) -> dict[str, Any]:
    """The other rows use the readout formula: check it against the model's own output at the last position."""
    formula = ctx.readout.logits(ctx.readout.normalise(acts.resid[-1, -1:]))[0]
    info = dict(ctx.info)
    info["lens_vs_model_max_abs"] = float((formula - acts.logits[-1]).abs().max())
    info["lens_formula_matches_model"] = info["lens_vs_model_max_abs"] <= 1e-3 * max(1.0, float(formula.abs().max()))
    return info


def lens_blocks(acts: Activations, req: Request, ctx: Context, run: _Run, view: tuple[int, int] | None = None) -> Iterator[Update]:
    """The other rows' lens readout, a block of positions at a time, the positions in ``view`` first."""
    T, R = acts.n_tokens, int(acts.resid.shape[0])
    rows = list(range(R - 1))
    V = ctx.readout.d_vocab
    step = max(1, ctx.chunk_elements // max(1, len(rows) * V))
    blocks = [(p, min(b, p + step)) for a, b in _segments(run.lo, T, view) for p in range(a, b, step)] if rows else []
    total = sum(p1 - p0 for p0, p1 in blocks)
    done_ = 0
    for p0, p1 in blocks:
        _check(ctx)
        x = acts.resid[:-1, p0:p1]
        if req.lens is not None:
            x = req.lens.transform_rows(x, rows)
        normed = ctx.readout.normalise(x).transpose(0, 1)  # [P, rows, d]
        part = read_block(
            normed,
            ctx.readout,
            top_k=req.top_k,
            target_ids=req.target_ids,
            reference=run.reference.select(slice(p0 - run.lo, p1 - run.lo)),
            chunk_elements=ctx.chunk_elements,
            workspace=run.workspace,
        )
        for name, arr in part.items():
            run.arrays[name][: R - 1, p0:p1] = arr.swapaxes(0, 1)
        run.strings.update(ctx.strings(np.unique(part["top_ids"])))
        done_ += p1 - p0
        yield Update("lens", run.analysis, (p0, p1), fraction=0.1 + 0.88 * done_ / max(1, total))


def done(req: Request, run: _Run) -> Update:
    """Emergence rows; the Analysis is complete."""
    top_ids = run.arrays["top_ids"]
    final_em, target_em = emergence_rows(top_ids, top_ids[-1, :, 0], req.target_ids)
    run.analysis.emergence_row[:] = final_em
    run.analysis.target_emergence[:] = target_em
    return Update("done", run.analysis, (0, run.analysis.n_tokens), fraction=1.0)


def _allocate(R: int, T: int, k: int, n: int) -> dict[str, np.ndarray]:
    return {
        "top_ids": np.full((R, T, k), UNREAD_ID, np.int64),
        "top_probs": np.full((R, T, k), np.nan, np.float32),
        "top_logits": np.full((R, T, k), np.nan, np.float32),
        "log_norm": np.full((R, T), np.nan, np.float32),
        "target_logits": np.full((R, T, n), np.nan, np.float32),
        "target_probs": np.full((R, T, n), np.nan, np.float32),
        "target_ranks": np.full((R, T, n), -1, np.int32),
        "entropy": np.full((R, T), np.nan, np.float32),
        "kl": np.full((R, T), np.nan, np.float32),
        "final_rank": np.full((R, T), -1, np.int32),
    }


def own_distribution(lens_arrays: dict[str, np.ndarray], row: int, positions: slice = slice(None)) -> None:
    """Set the final row's comparisons with the model's output by definition: it *is* the model's own
    distribution, so no divergence (``kl`` 0) and its top-1 is its own top (``final_rank`` 0)."""
    lens_arrays["kl"][row, positions] = 0.0
    lens_arrays["final_rank"][row, positions] = 0


def _segments(lo: int, T: int, view: tuple[int, int] | None) -> list[tuple[int, int]]:
    """Positions lo..T-1 as runs [a, b), the positions in view first."""
    if view is not None:
        a, b = max(lo, int(view[0])), min(T, int(view[1]))
        if a < b:
            return [s for s in ((a, b), (lo, a), (b, T)) if s[0] < s[1]]
    return [(lo, T)] if lo < T else []


def _row_names(R: int) -> list[str]:
    from resid_widgets import hooks

    return hooks.residual_rows(R - 1)


def _check(ctx: Context) -> None:
    if ctx.cancelled():
        raise Cancelled("superseded by a newer request")


def drain(updates: Iterator[Update]) -> Analysis:
    """Run every stage; the complete analysis."""
    last = None
    for last in updates:
        pass
    assert last is not None and last.stage == "done"
    return last.analysis


__all__ = ["Activations", "Cancelled", "Context", "Lens", "Request", "Update", "UNREAD_ID", "begin", "done", "drain", "lens_blocks", "run_stages"]
