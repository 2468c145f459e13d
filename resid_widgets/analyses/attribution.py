"""Who wrote the residual stream: its decomposition into writers and their direct logit attribution.

The residual stream at row r (row 0 = the embeddings, row l+1 = ``blocks.l.hook_resid_post``) and position t
is a sum of *writers* (TransformerLens's labels and order, as ``get_full_resid_decomposition``)::

    resid[r, t] = sum_{l<r} sum_h head[l, h, t] + sum_{l<r} mlp_out[l, t] + embed[t] + pos_embed[t] + bias[r, t]

    head[l, h, t] = c_l * post_l((z[l, t, h] - vb[l, h]) @ W_O[l, h])         # "L{l}H{h}"
    bias[r, t]    = sum_{l<r} c_l * post_l(b_O[l] + sum_h vb[l, h] @ W_O[l, h])  # "bias"

``z`` are the heads' mixed values (grouped-query heads read their K/V group ``h // (H / n_kv)``), ``vb`` each
head's value bias: ``b_V`` plus the pre-attention norm's beta through ``W_V`` (the attention pattern sums to 1,
so it reaches the output as a constant; it is moved into ``bias``, as TransformerLens's
``fold_value_biases`` does, so compatibility-mode models have ``vb = 0`` already). ``mlp_out`` includes the
MLP's output bias ``b_out`` (as TransformerLens's unexpanded decomposition); split into neurons it is
``sum_n post[l, t, n] * W_out[l, n] + b_out[l]``. ``post_l`` is the identity, or for models that normalise a
sublayer's output before adding it (Gemma-2/3, OLMo-2: RMSNorm, no centring) ``x * gamma / s_post[l, t]``
with the forward pass's own scale ``s_post`` frozen: linear, so the writers still sum to the residual.
``c_l`` is a block's residual multiplier (1 but for Granite).

Direct logit attribution of writer w to a direction at (r, t): the final norm's scale is frozen at the value
the lens uses for that row (``s[r, t]``, recomputed from the row itself; at the last row the model's own)::

    u           = gamma_f * (W_U[:, target] - W_U[:, counterfactual])     (LayerNorm: minus its mean)
    dla[w, t]   = w[t] @ u / s[r, t]
    sum_w dla   = z_lens[r, t, target] - z_lens[r, t, cf] - constant      (pre-soft-cap logits)
    constant    = beta_f @ (W_U[:, target] - W_U[:, cf]) + b_U[target] - b_U[cf]

``gamma_f``, ``beta_f``: the final norm's affine part (compatibility mode folds them into ``W_U`` and ``b_U``
but for OLMo-2). Gemma-2's soft-cap ``c tanh(z / c)`` is not linear: attribution is in the pre-cap logit space.

Memory: per-head attribution projects each layer's heads onto the direction at once
(``z[l] (pos, head, d_head) . (W_O[l] @ u) -> (pos, head)``), so [layers, heads, positions, d_model] is never
held; neurons are projected the same way (``post . (W_out @ u)``), never [neurons, d_model], and only at the
positions recorded for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from resid_widgets.analyses.lens import FinalReadout

#: relative error below which the decomposition is reported as summing to the residual
RESIDUAL_TOLERANCE = 1e-4

GRANULARITIES = ("heads", "layers")


@dataclass
class Writers:
    """The activations of one prompt that attribution reads (batch dim dropped, float32).

    ``z``, ``attn_out``, ``mlp_out`` and the post-norm scales are per layer (lists of L tensors).
    """

    ids: np.ndarray  # [T]
    embed: torch.Tensor  # [T, d_model]
    pos_embed: torch.Tensor | None  # [T, d_model]; None for rotary / no positional embedding
    z: list[torch.Tensor]  # L x [T, n_heads, d_head]
    attn_out: list[torch.Tensor]  # L x [T, d_model]
    mlp_out: list[torch.Tensor] | None  # L x [T, d_model]; None for attention-only models
    resid: torch.Tensor  # [R, T, d_model], R = L + 1
    row_scale: torch.Tensor  # [R, T]: the final norm's scale recomputed from each row (what the lens uses)
    model_scale: torch.Tensor | None  # [T]: ln_final.hook_scale of the forward pass (row L's scale)
    attn_post_scale: list[torch.Tensor | None]  # L x [T] (sandwich norms) or None
    mlp_post_scale: list[torch.Tensor | None]  # L x [T] or None
    neuron_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [N]
    neuron_acts: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> [N, d_mlp]

    @property
    def n_layers(self) -> int:
        return len(self.z)

    @property
    def n_positions(self) -> int:
        return int(self.embed.shape[0])


@dataclass
class Weights:
    """The model's weights that attribution reads (float32)."""

    W_O: list[torch.Tensor]  # L x [n_heads, d_head, d_model]
    b_O: list[torch.Tensor | None]  # L x [d_model]
    value_bias: list[torch.Tensor | None]  # L x [n_heads, d_head]: b_V (+ ln1's beta @ W_V), per query head
    W_out: list[torch.Tensor] | None  # L x [d_mlp, d_model]
    b_out: list[torch.Tensor | None] | None  # L x [d_model]
    attn_post_gamma: list[torch.Tensor | None]  # L x [d_model]: the post-attention norm's weight, or None
    mlp_post_gamma: list[torch.Tensor | None]
    contribution: list[float]  # L: residual multipliers
    final_gamma: torch.Tensor  # [d_model]
    final_beta: torch.Tensor  # [d_model]
    centre: bool  # the final norm subtracts the mean (LayerNorm)
    readout: FinalReadout  # ln_final, W_U, b_U (and the output transform, not applied here)
    kv_group: np.ndarray  # [n_heads]: the K/V group each query head reads
    has_neuron_hook: bool = True

    @property
    def n_heads(self) -> int:
        return int(self.W_O[0].shape[0]) if self.W_O else 0


# ---- labels and input checks ----------------------------------------------------------------------------------
def writer_labels(n_layers: int, n_heads: int, *, has_pos_embed: bool, has_mlp: bool, granularity: str = "heads") -> list[str]:
    """TransformerLens's labels, in its order: ``get_full_resid_decomposition(expand_neurons=False)`` for
    "heads" (``L{l}H{h}``..., ``{l}_mlp_out``..., ``embed``, ``pos_embed``, ``bias``), ``decompose_resid`` for
    "layers" (``embed``, ``pos_embed``, ``{l}_attn_out``, ``{l}_mlp_out``, ...)."""
    check_granularity(granularity)
    emb = ["embed"] + (["pos_embed"] if has_pos_embed else [])
    if granularity == "layers":
        per_layer = [[f"{l}_attn_out"] + ([f"{l}_mlp_out"] if has_mlp else []) for l in range(n_layers)]
        return emb + [x for pair in per_layer for x in pair]
    heads = [f"L{l}H{h}" for l in range(n_layers) for h in range(n_heads)]
    mlps = [f"{l}_mlp_out" for l in range(n_layers)] if has_mlp else []
    return heads + mlps + emb + ["bias"]


def neuron_label(layer: int, neuron: int) -> str:
    return f"L{layer}N{neuron}"


def check_granularity(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, not {granularity!r}")
    return granularity


def check_row(row: int | None, n_layers: int) -> int:
    """Row in [0, L] (negative counts from the end; None = the last row, the model's output)."""
    if row is None:
        return n_layers
    if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
        raise TypeError(f"row must be an integer, not {type(row).__name__}")
    r = int(row) + (n_layers + 1 if row < 0 else 0)
    if not 0 <= r <= n_layers:
        raise ValueError(f"row {row} is out of range: this model has rows 0..{n_layers} (0 = embeddings, {n_layers} = output)")
    return r


def check_positions(positions: int | Sequence[int] | None, n_positions: int) -> np.ndarray:
    """Positions [P] (negative counts from the end; None = every position)."""
    if positions is None:
        return np.arange(n_positions, dtype=np.int64)
    scalar = isinstance(positions, (int, np.integer)) and not isinstance(positions, bool)
    arr = np.atleast_1d(np.asarray(positions))
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)) or isinstance(positions, bool):
        raise TypeError("positions must be an integer or a sequence of integers")
    if arr.size == 0 and not scalar:
        raise ValueError("positions is empty")
    bad = arr[(arr < -n_positions) | (arr >= n_positions)]
    if bad.size:
        raise ValueError(f"position {int(bad[0])} is out of range: the prompt has {n_positions} positions (0..{n_positions - 1})")
    return np.where(arr < 0, arr + n_positions, arr).astype(np.int64)


# ---- the readout direction ------------------------------------------------------------------------------------
def readout_direction(weights: Weights, target_ids, counterfactual_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual-space direction u [P', d_model] whose dot product with the normalised residual is the
    (pre-cap) logit of ``target`` (minus ``counterfactual``'s), and the constant [P'] it leaves out:
    ``beta_f @ d + b_U`` difference. ``target_ids`` is one id or one per position ([P'])."""
    W_U, b_U = weights.readout.W_U.float(), weights.readout.b_U
    t = torch.as_tensor(np.atleast_1d(np.asarray(target_ids, dtype=np.int64)), device=W_U.device)
    d = W_U[:, t].T  # [P', d]
    const = torch.zeros(len(t), device=W_U.device) if b_U is None else b_U.float()[t].clone()
    if counterfactual_ids is not None:
        c = torch.as_tensor(np.atleast_1d(np.asarray(counterfactual_ids, dtype=np.int64)), device=W_U.device)
        d = d - W_U[:, c].T
        if b_U is not None:
            const = const - b_U.float()[c]
    const = const + d @ weights.final_beta
    u = d * weights.final_gamma
    if weights.centre:
        u = u - u.mean(-1, keepdim=True)
    return u, const


def lens_value(weights: Weights, resid: torch.Tensor, target_ids, counterfactual_ids=None) -> torch.Tensor:
    """The lens's own pre-cap logit (difference) [P] of residual vectors [P, d], read by the model's final norm
    recomputed for each vector (independent of the frozen-scale algebra): ``ln_final(r) @ W_U + b_U``."""
    readout = weights.readout
    normed = readout.normalise(resid)
    t = torch.as_tensor(np.atleast_1d(np.asarray(target_ids, dtype=np.int64)), device=normed.device)
    W_U = readout.W_U.float()
    val = (normed * W_U[:, t].T).sum(-1) + (0 if readout.b_U is None else readout.b_U.float()[t])
    if counterfactual_ids is not None:
        c = torch.as_tensor(np.atleast_1d(np.asarray(counterfactual_ids, dtype=np.int64)), device=normed.device)
        val = val - ((normed * W_U[:, c].T).sum(-1) + (0 if readout.b_U is None else readout.b_U.float()[c]))
    return val


def lens_top1(weights: Weights, resid: torch.Tensor, *, block: int = 64) -> np.ndarray:
    """The lens's top-1 token [P] of residual vectors [P, d] (the soft-cap is monotone: same argmax)."""
    readout = weights.readout
    out = []
    for i in range(0, resid.shape[0], block):
        z = readout.normalise(resid[i : i + block]) @ readout.W_U.float()
        if readout.b_U is not None:
            z = z + readout.b_U.float()
        out.append(z.argmax(-1))
    return torch.cat(out).numpy(force=True).astype(np.int64)


# ---- per-layer pieces ----------------------------------------------------------------------------------------
def _post(x: torch.Tensor, gamma: torch.Tensor | None, scale: torch.Tensor | None, pos) -> torch.Tensor:
    """A sandwich norm with its forward-pass scale frozen: ``x * gamma / s_post`` (x [..., P, d])."""
    if gamma is None or scale is None:
        return x
    return x * gamma / scale[pos][:, None]


def _heads_z(writers: Writers, weights: Weights, layer: int, pos) -> torch.Tensor:
    """z minus each head's value bias, at positions ``pos``: [P, H, d_head]."""
    z = writers.z[layer][pos].float()
    vb = weights.value_bias[layer]
    return z if vb is None else z - vb


def _attn_bias(weights: Weights, layer: int) -> torch.Tensor | None:
    """The attention's constant output [d]: b_O plus every head's value bias through W_O (before post-norm)."""
    b, vb = weights.b_O[layer], weights.value_bias[layer]
    if vb is not None:
        vbo = torch.einsum("hk,hkd->d", vb, weights.W_O[layer])
        b = vbo if b is None else b + vbo
    return b


def head_vectors(writers: Writers, weights: Weights, layer: int, pos) -> torch.Tensor:
    """Each head's write into the residual stream at positions ``pos``: [H, P, d_model]."""
    out = torch.einsum("phk,hkd->hpd", _heads_z(writers, weights, layer, pos), weights.W_O[layer].float())
    out = _post(out, weights.attn_post_gamma[layer], writers.attn_post_scale[layer], pos)
    return out * weights.contribution[layer]


def bias_vectors(writers: Writers, weights: Weights, row: int, pos) -> torch.Tensor:
    """The ``bias`` writer at row ``row``: [P, d_model] (constant over positions without sandwich norms)."""
    d = writers.embed.shape[-1]
    total = torch.zeros(len(pos), d, device=writers.embed.device)
    for l in range(row):
        b = _attn_bias(weights, l)
        if b is not None:
            total = total + _post(b.float().expand(len(pos), d), weights.attn_post_gamma[l], writers.attn_post_scale[l], pos) * weights.contribution[l]
    return total


# ---- decomposition in d_model space --------------------------------------------------------------------------
@dataclass
class Decomposition:
    """The residual stream at one row and some positions, split into its writers."""

    labels: list[str]  # [W]
    vectors: np.ndarray  # [W, P, d_model]
    residual: np.ndarray  # [P, d_model]: the row itself (from the model's own hooks)
    row: int
    positions: np.ndarray  # [P]
    error: float  # max |sum_w vectors - residual| / max |residual| (relative, over the positions)

    @property
    def holds(self) -> bool:
        return self.error <= RESIDUAL_TOLERANCE


def decompose(writers: Writers, weights: Weights, *, row: int | None = None, positions=None, granularity: str = "heads") -> Decomposition:
    """The writers of row ``row`` at ``positions`` as vectors [W, P, d_model] (labels: ``writer_labels``)."""
    check_granularity(granularity)
    r = check_row(row, writers.n_layers)
    pos = check_positions(positions, writers.n_positions)
    H = weights.n_heads
    has_mlp = writers.mlp_out is not None
    parts: dict[str, torch.Tensor] = {"embed": writers.embed[pos].float()}
    if writers.pos_embed is not None:
        parts["pos_embed"] = writers.pos_embed[pos].float()
    for l in range(r):
        if granularity == "heads":
            for h, v in enumerate(head_vectors(writers, weights, l, pos)):
                parts[f"L{l}H{h}"] = v
        else:
            parts[f"{l}_attn_out"] = writers.attn_out[l][pos].float()
        if has_mlp:
            parts[f"{l}_mlp_out"] = writers.mlp_out[l][pos].float()
    if granularity == "heads":
        parts["bias"] = bias_vectors(writers, weights, r, pos)
    labels = writer_labels(r, H, has_pos_embed=writers.pos_embed is not None, has_mlp=has_mlp, granularity=granularity)
    vectors = torch.stack([parts[k] for k in labels])
    resid = writers.resid[r][pos].float()
    err = float((vectors.sum(0) - resid).abs().max() / resid.abs().max().clamp_min(1e-12))
    return Decomposition(labels, vectors.numpy(force=True), resid.numpy(force=True), r, pos, err)


def neuron_vectors(writers: Writers, weights: Weights, layer: int, position: int) -> np.ndarray:
    """Every neuron's write ``post[n] * W_out[n]`` (post-norm and multiplier applied) of one MLP at one
    recorded position: [d_mlp, d_model] (one layer, one position: small)."""
    acts, p = _neuron_acts(writers, weights, layer, [position])
    out = acts[0][:, None] * weights.W_out[layer].float()
    out = _post(out[None], weights.mlp_post_gamma[layer], writers.mlp_post_scale[layer], np.asarray([position]))[0]
    return (out * weights.contribution[layer]).numpy(force=True)


# ---- direct logit attribution -------------------------------------------------------------------------------
@dataclass
class Attribution:
    """Direct logit attribution of every writer to one direction at one row, at each chosen position.

    ``values[w, i]`` is writer w's share of ``z_lens[row, positions[i], target] - z_lens[..., counterfactual]``
    (pre-cap logits) with the final norm's scale frozen; ``values.sum(0) + constant == lens_value``.
    """

    labels: list[str]  # [W], TransformerLens's labels (``writer_labels``)
    values: np.ndarray  # [W, P] float32
    layer_values: np.ndarray  # [row, 2, P]: each layer's attn_out and mlp_out (0 for attention-only) as wholes
    row: int
    positions: np.ndarray  # [P]
    token_ids: np.ndarray  # [T] the prompt
    target_ids: np.ndarray  # [P]
    counterfactual_ids: np.ndarray | None  # [P]
    scale: np.ndarray  # [P] the frozen final-norm scale s[row, t]
    constant: np.ndarray  # [P] beta_f . d + b_U difference (not attributed to any writer)
    lens_value: np.ndarray  # [P] the lens's own pre-cap logit (difference) at (row, t)
    n_layers: int
    n_heads: int
    kv_group: np.ndarray  # [n_heads]
    checks: dict[str, Any]  # "logit": |sum + constant - lens| / max(1, |lens|); "scale" (row L vs the forward pass)

    def head_values(self) -> np.ndarray:
        """The heads' values as [row, n_heads, P] (layers at or after ``row`` did not write yet)."""
        n = self.row * self.n_heads
        return self.values[:n].reshape(self.row, self.n_heads, self.values.shape[1])

    def top(self, k: int = 10, *, index: int = -1) -> list[tuple[str, float]]:
        """The k writers with the largest |value| at ``positions[index]``, sorted by value (largest first)."""
        col = self.values[:, index]
        order = np.argsort(-np.abs(col), kind="stable")[:k]
        order = order[np.argsort(-col[order], kind="stable")]
        return [(self.labels[i], float(col[i])) for i in order]


def dla(
    writers: Writers,
    weights: Weights,
    target_ids,
    counterfactual_ids=None,
    *,
    row: int | None = None,
    positions=None,
) -> Attribution:
    """Direct logit attribution of every writer (heads, MLPs, embeddings, bias) at row ``row``, ``positions``.

    ``target_ids`` / ``counterfactual_ids``: one token id, or one per position ([P]). Streams over layers:
    each layer's heads are projected onto ``W_O[l] @ u`` at once, never held in d_model space.
    """
    r = check_row(row, writers.n_layers)
    pos = check_positions(positions, writers.n_positions)
    tgt, cf = _per_position(target_ids, len(pos), "target"), None
    if counterfactual_ids is not None:
        cf = _per_position(counterfactual_ids, len(pos), "counterfactual")
    shared = bool((tgt == tgt[0]).all() and (cf is None or (cf == cf[0]).all()))
    u, const = readout_direction(weights, tgt[:1] if shared else tgt, None if cf is None else (cf[:1] if shared else cf))
    s = writers.row_scale[r][pos].float()  # [P]
    proj = lambda x: (x.float() * u).sum(-1) / s  # noqa: E731  x [P, d] -> [P]
    H, has_mlp = weights.n_heads, writers.mlp_out is not None
    heads, mlps, strip = [], [], torch.zeros(r, 2, len(pos))
    for l in range(r):
        ug = u if weights.attn_post_gamma[l] is None else u * weights.attn_post_gamma[l]
        w_l = torch.einsum("hkd,pd->phk", weights.W_O[l].float(), ug) * weights.contribution[l]  # [P' , H, d_head]
        v = (_heads_z(writers, weights, l, pos) * w_l).sum(-1)  # [P, H]
        if writers.attn_post_scale[l] is not None and weights.attn_post_gamma[l] is not None:
            v = v / writers.attn_post_scale[l][pos][:, None]
        heads.append(v / s[:, None])
        strip[l, 0] = proj(writers.attn_out[l][pos])
        if has_mlp:
            strip[l, 1] = proj(writers.mlp_out[l][pos])
            mlps.append(strip[l, 1])
    emb = [proj(writers.embed[pos])] + ([proj(writers.pos_embed[pos])] if writers.pos_embed is not None else [])
    bias = proj(bias_vectors(writers, weights, r, pos))
    rows = ([torch.cat(heads, 1).T] if heads else []) + ([torch.stack(mlps)] if mlps else []) + [torch.stack(emb), bias[None]]
    values = torch.cat(rows).numpy(force=True)
    lens = lens_value(weights, writers.resid[r][pos], tgt, cf)
    const_p = const.expand(len(pos))
    logit_err = float(((torch.as_tensor(values).sum(0) + const_p - lens).abs() / lens.abs().clamp_min(1.0)).max())
    return Attribution(
        labels=writer_labels(r, H, has_pos_embed=writers.pos_embed is not None, has_mlp=has_mlp),
        values=values.astype(np.float32),
        layer_values=strip.numpy(force=True).astype(np.float32),
        row=r,
        positions=pos,
        token_ids=np.asarray(writers.ids, dtype=np.int64),
        target_ids=tgt,
        counterfactual_ids=cf,
        scale=s.numpy(force=True),
        constant=const_p.numpy(force=True),
        lens_value=lens.numpy(force=True),
        n_layers=writers.n_layers,
        n_heads=H,
        kv_group=np.asarray(weights.kv_group, dtype=np.int64),
        checks=_checks(writers, logit_err),
    )


def _checks(writers: Writers, logit_err: float) -> dict[str, Any]:
    out: dict[str, Any] = {"logit": logit_err, "tolerance": RESIDUAL_TOLERANCE}
    if writers.model_scale is not None:
        ms = writers.model_scale.float()
        out["scale"] = float(((writers.row_scale[-1].float() - ms).abs() / ms.abs().clamp_min(1e-12)).max())
    out["holds"] = all(v <= RESIDUAL_TOLERANCE for k, v in out.items() if k in ("logit", "scale"))
    return out


def _per_position(ids, n: int, what: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(ids))
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{what} must be a token id or one token id per position")
    if arr.size == 1:
        return np.full(n, int(arr[0]), dtype=np.int64)
    if arr.size != n:
        raise ValueError(f"{what} has {arr.size} token ids for {n} positions; give one id, or one per position")
    return arr.astype(np.int64)


# ---- neurons -------------------------------------------------------------------------------------------------
@dataclass
class NeuronAttribution:
    """Every neuron's direct logit attribution in the chosen MLPs at the chosen (recorded) positions."""

    layers: np.ndarray  # [L']
    positions: np.ndarray  # [P]
    values: np.ndarray  # [L', P, d_mlp]: post[n] * (W_out[n] @ u) / s (post-norm and multiplier applied)
    mlp_bias: np.ndarray  # [L', P]: b_out's share, so values.sum(-1) + mlp_bias == mlp_total
    mlp_total: np.ndarray  # [L', P]: the whole MLP's attribution (``{l}_mlp_out`` in ``Attribution``)
    error: float  # max |values.sum(-1) + mlp_bias - mlp_total| / max(1, |mlp_total|)

    def top(self, k: int = 10, *, index: int = -1) -> list[tuple[str, float]]:
        """The k neurons (over the layers) with the largest |value| at ``positions[index]``, largest value first."""
        v = self.values[:, index, :]
        flat = np.argsort(-np.abs(v), axis=None, kind="stable")[:k]
        li, ni = np.unravel_index(flat, v.shape)
        pairs = [(neuron_label(int(self.layers[a]), int(b)), float(v[a, b])) for a, b in zip(li, ni)]
        return sorted(pairs, key=lambda p: -p[1])


def _neuron_acts(writers: Writers, weights: Weights, layer: int, positions) -> tuple[torch.Tensor, np.ndarray]:
    if not weights.has_neuron_hook or weights.W_out is None or writers.mlp_out is None:
        raise ValueError("this model's MLPs have no neuron activations (hook_post): neuron attribution needs an MLP with a hook_post")
    if not 0 <= layer < writers.n_layers:
        raise ValueError(f"layer {layer} is out of range: this model has layers 0..{writers.n_layers - 1}")
    pos = check_positions(positions, writers.n_positions)
    where = {int(p): i for i, p in enumerate(writers.neuron_positions)}
    missing = [int(p) for p in pos if int(p) not in where]
    if missing or layer not in writers.neuron_acts:
        raise ValueError(
            f"neurons were recorded at positions {sorted(where)} only, not {missing or list(pos)}; "
            "record them when collecting (neuron_positions=...)"
        )
    return writers.neuron_acts[layer][[where[int(p)] for p in pos]].float(), pos


def neuron_dla(
    writers: Writers,
    weights: Weights,
    target_ids,
    counterfactual_ids=None,
    *,
    row: int | None = None,
    positions=None,
    layers: Sequence[int] | None = None,
) -> NeuronAttribution:
    """Neuron-level attribution of the MLPs ``layers`` (default: every layer below ``row``) at recorded
    ``positions``; ``[neurons, d_model]`` is never formed (``post * (W_out @ u)``)."""
    r = check_row(row, writers.n_layers)
    pos = check_positions(positions if positions is not None else writers.neuron_positions, writers.n_positions)
    layer_list = list(range(r)) if layers is None else [int(l) for l in layers]
    too_late = [l for l in layer_list if l >= r]
    if too_late:
        raise ValueError(f"layer {too_late[0]} writes after row {r}: choose layers below the row (0..{r - 1})")
    tgt = _per_position(target_ids, len(pos), "target")
    cf = None if counterfactual_ids is None else _per_position(counterfactual_ids, len(pos), "counterfactual")
    u, _ = readout_direction(weights, tgt, cf)  # [P, d]
    s = writers.row_scale[r][pos].float()
    vals, biases, totals = [], [], []
    for l in layer_list:
        acts, _ = _neuron_acts(writers, weights, l, pos)
        gamma, ps = weights.mlp_post_gamma[l], writers.mlp_post_scale[l]
        ug = u if gamma is None else u * gamma
        denom = s if (gamma is None or ps is None) else s * ps[pos].float()
        c = weights.contribution[l]
        vals.append(acts * (weights.W_out[l].float() @ ug.T).T * (c / denom)[:, None])  # [P, d_mlp]
        b = weights.b_out[l] if weights.b_out is not None else None
        biases.append(torch.zeros(len(pos)) if b is None else (b.float() * ug).sum(-1) * c / denom)
        totals.append((writers.mlp_out[l][pos].float() * u).sum(-1) / s)
    values, mlp_bias, mlp_total = torch.stack(vals), torch.stack(biases), torch.stack(totals)
    err = float(((values.sum(-1) + mlp_bias - mlp_total).abs() / mlp_total.abs().clamp_min(1.0)).max())
    return NeuronAttribution(
        layers=np.asarray(layer_list, dtype=np.int64),
        positions=pos,
        values=values.numpy(force=True).astype(np.float32),
        mlp_bias=mlp_bias.numpy(force=True),
        mlp_total=mlp_total.numpy(force=True),
        error=err,
    )


# ---- over a prompt set (seed 001) -----------------------------------------------------------------------------
def row_lens_values(writers: Writers, weights: Weights, target_id: int, counterfactual_id: int | None = None, *, position: int = -1) -> np.ndarray:
    """[R]: the lens's pre-cap logit (difference) at one position at every row: the accumulated residual
    through the final norm recomputed per row (TransformerLens's ``accumulated_resid(apply_ln=True)``)."""
    (p,) = check_positions(position, writers.n_positions)
    R = writers.resid.shape[0]
    cf = None if counterfactual_id is None else [counterfactual_id] * R
    return lens_value(weights, writers.resid[:, p], [target_id] * R, cf).numpy(force=True)


def summarize(attributions: Sequence[Attribution], *, index: int = -1) -> dict[str, Any]:
    """Per-prompt attributions at one position each (``positions[index]``) stacked and averaged. Every
    attribution must share the labels (same model, same row). Returns ``labels`` [W], ``values`` [P, W],
    ``mean`` / ``std`` [W] (population s.d.), ``head_mean`` [L, H], ``layer_mean`` [L, 2] (attn, MLP)."""
    if not attributions:
        raise ValueError("no attributions to summarise")
    labels = attributions[0].labels
    if any(a.labels != labels for a in attributions):
        raise ValueError("attributions have different writers (rows or models differ)")
    values = np.stack([a.values[:, index] for a in attributions]).astype(np.float64)
    layers = np.stack([a.layer_values[:, :, index] for a in attributions]).astype(np.float64)
    a0 = attributions[0]
    mean = values.mean(0)
    return {
        "labels": list(labels),
        "values": values,
        "mean": mean,
        "std": values.std(0),
        "head_mean": mean[: a0.row * a0.n_heads].reshape(a0.row, a0.n_heads),
        "layer_mean": layers.mean(0),
    }


__all__ = [
    "Attribution",
    "Decomposition",
    "GRANULARITIES",
    "NeuronAttribution",
    "RESIDUAL_TOLERANCE",
    "Weights",
    "Writers",
    "check_positions",
    "check_row",
    "decompose",
    "dla",
    "head_vectors",
    "lens_top1",
    "lens_value",
    "neuron_dla",
    "neuron_label",
    "neuron_vectors",
    "readout_direction",
    "row_lens_values",
    "summarize",
    "writer_labels",
]
