"""One forward pass for attribution: what each writer put into the residual stream, and the weights to split it.

``AttributionRun(session, prompt, neuron_positions=[-1])`` runs the model once with hooks on exactly what
``resid_widgets.analyses.attribution`` reads (hook names: ``resid_widgets.hooks``): the embeddings, every
layer's ``z``, ``attn_out`` and ``mlp_out``, the residual rows, the final norm's scale, sandwich norms'
scales, and MLP neuron activations only at ``neuron_positions``. Its methods resolve targets through the
session (single tokens, clear errors) and call the analysis functions (numpy out)::

    run = AttributionRun(session, "The capital of France is", neuron_positions=[-1])
    att = run.dla(" Paris", " London", positions=-1)       # Attribution: labels [W], values [W, 1]
    run.neurons(" Paris", " London", positions=-1).top(5)   # the top neurons of every MLP
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from resid_widgets import hooks
from resid_widgets.analyses import attribution as A
from resid_widgets.analyses.lens import FinalReadout


class AttributionRun:
    """One prompt's writers and the model's weights, ready for ``dla`` / ``decompose`` / ``neurons``."""

    def __init__(self, session: Any, prompt: Any, *, neuron_positions: Sequence[int] | int | None = None, prepend_bos: bool | None = None):
        from resid_widgets.session.backends.capabilities import require

        require(session, "attribution")  # a device-mapped, driver or nnsight session: a clear error naming it
        self.session = session
        with session._lock:
            session._check_weights()
            ids, self.added_bos = session.to_token_ids(prompt, prepend_bos=prepend_bos)
            self.weights = collect_weights(session.model)
            npos = np.zeros(0, np.int64) if neuron_positions is None else A.check_positions(neuron_positions, len(ids))
            if npos.size and not self.weights.has_neuron_hook:
                raise ValueError("this model's MLPs have no neuron activations (hook_post): neuron attribution needs an MLP with a hook_post")
            self.writers = collect_writers(session.model, ids, self.weights, neuron_positions=npos)
        self.prompt = prompt if isinstance(prompt, str) else None

    @property
    def token_ids(self) -> np.ndarray:
        return self.writers.ids

    @property
    def labels(self) -> list[str]:
        w = self.writers
        return A.writer_labels(w.n_layers, self.weights.n_heads, has_pos_embed=w.pos_embed is not None, has_mlp=w.mlp_out is not None)

    def token_id(self, token: str | int, what: str = "target") -> int:
        """One token id (a string must be exactly one token of the vocabulary)."""
        if isinstance(token, (list, tuple, np.ndarray)):
            raise TypeError(f"{what} must be one token (a string or an id), not a sequence")
        return self.session.resolve_targets([token])[1][0]

    def directions(self, target: Any, counterfactual: Any, *, row: int | None, positions) -> tuple[np.ndarray, np.ndarray | None]:
        """target / counterfactual as token ids per position ([P]); ``"top1"`` = the lens's top-1 at each cell."""
        r = A.check_row(row, self.writers.n_layers)
        pos = A.check_positions(positions, self.writers.n_positions)
        if isinstance(target, str) and target == "top1":
            tgt = A.lens_top1(self.weights, self.writers.resid[r][pos])
        else:
            tgt = np.full(len(pos), self.token_id(target, "target"), dtype=np.int64)
        cf = None if counterfactual is None else np.full(len(pos), self.token_id(counterfactual, "counterfactual"), dtype=np.int64)
        return tgt, cf

    def dla(self, target: Any = "top1", counterfactual: Any = None, *, row: int | None = None, positions=None) -> A.Attribution:
        """Direct logit attribution of every writer (see ``resid_widgets.analyses.attribution``)."""
        tgt, cf = self.directions(target, counterfactual, row=row, positions=positions)
        return A.dla(self.writers, self.weights, tgt, cf, row=row, positions=positions)

    def decompose(self, *, row: int | None = None, positions=None, granularity: str = "heads") -> A.Decomposition:
        return A.decompose(self.writers, self.weights, row=row, positions=positions, granularity=granularity)

    def neurons(self, target: Any = "top1", counterfactual: Any = None, *, row: int | None = None, positions=None, layers=None) -> A.NeuronAttribution:
        if positions is None:
            positions = self.writers.neuron_positions
        if not self.weights.has_neuron_hook:
            raise ValueError("this model's MLPs have no neuron activations (hook_post): neuron attribution needs an MLP with a hook_post")
        tgt, cf = self.directions(target, counterfactual, row=row, positions=positions)
        return A.neuron_dla(self.writers, self.weights, tgt, cf, row=row, positions=positions, layers=layers)


# ---- weights ----------------------------------------------------------------------------------------------------
def norm_affine(norm: Any, d_model: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A norm's affine part ``gamma * x_hat + beta`` as (gamma, beta) [d_model], read by applying the module's own
    affine step to ones and zeros (Gemma's ``1 + w`` included); identity when it has none."""
    ones, zeros = torch.ones(d_model), torch.zeros(d_model)
    affine = getattr(norm, "_apply_weight_and_bias", None)  # TransformerLens 4 normalisation bridges
    with torch.inference_mode():
        if callable(affine):
            w = getattr(norm, "weight", None)
            dev = w.device if isinstance(w, torch.Tensor) else ones.device
            beta = affine(zeros.to(dev), torch.float32).float()
            return (affine(ones.to(dev), torch.float32).float() - beta), beta
        w, b = getattr(norm, "w", None), getattr(norm, "b", None)  # TransformerLens <= 3 LayerNorm / RMSNorm
        gamma = ones if w is None else w.detach().float()
        beta = torch.zeros_like(gamma) if b is None else b.detach().float()
        return gamma, beta


def _tensor(x: Any) -> torch.Tensor | None:
    return x.detach().float() if isinstance(x, torch.Tensor) else None


def _value_bias(block: Any, n_heads: int, d_model: int) -> torch.Tensor | None:
    """b_V plus the pre-attention norm's beta through W_V, per query head [H, d_head]; None when zero."""
    attn = block.attn
    W_V = _tensor(getattr(attn, "W_V", None))
    vb = _tensor(getattr(attn, "b_V", None))
    ln1 = getattr(block, "ln1", None)
    if ln1 is not None and W_V is not None:
        _, beta = norm_affine(ln1, d_model)
        if bool(beta.abs().max() > 0):
            through = torch.einsum("d,gdk->gk", beta.to(W_V.device), W_V)
            vb = through if vb is None else vb + through
    if vb is None or not bool(vb.abs().max() > 0):
        return None
    if vb.shape[0] != n_heads:  # grouped-query attention: each K/V group serves n_heads / n_kv query heads
        vb = vb.repeat_interleave(n_heads // vb.shape[0], dim=0)
    return vb


def collect_weights(model: Any) -> A.Weights:
    """The weights attribution reads, from a compatibility-mode bridge or a ``HookedTransformer``."""
    cfg, L = model.cfg, int(model.cfg.n_layers)
    d = int(model.W_U.shape[0])
    W_O, b_O, vb, W_out, b_out, g_attn, g_mlp, contrib = [], [], [], [], [], [], [], []
    has_mlp = not bool(getattr(cfg, "attn_only", False))
    n_heads = int(cfg.n_heads)
    for l in range(L):
        block = model.blocks[l]
        W_O.append(block.attn.W_O.detach().float())
        b_O.append(_tensor(getattr(block.attn, "b_O", None)))
        vb.append(_value_bias(block, n_heads, d))
        contrib.append(float(getattr(block, "residual_contribution_scale", 1.0)))
        g_attn.append(_post_gamma(block, "ln1_post", d))
        g_mlp.append(_post_gamma(block, "ln2_post", d))
        mlp = getattr(block, "mlp", None) if has_mlp else None
        W_out.append(None if mlp is None else _tensor(getattr(mlp, "W_out", None)))
        b_out.append(None if mlp is None else _tensor(getattr(mlp, "b_out", None)))
    has_mlp = has_mlp and all(w is not None for w in W_out)
    hook_dict = getattr(model, "hook_dict", {}) or {}
    has_neuron_hook = has_mlp and all(hooks.mlp_post(l) in hook_dict for l in range(L))
    gamma, beta = norm_affine(model.ln_final, d)
    n_kv = int(getattr(cfg, "n_key_value_heads", None) or n_heads)
    b_U = getattr(model, "b_U", None)
    return A.Weights(
        W_O=W_O,
        b_O=b_O,
        value_bias=vb,
        W_out=W_out if has_mlp else None,
        b_out=b_out if has_mlp else None,
        attn_post_gamma=g_attn,
        mlp_post_gamma=g_mlp,
        contribution=contrib,
        final_gamma=gamma,
        final_beta=beta,
        centre=str(getattr(cfg, "normalization_type", "")) in ("LN", "LNPre") and not bool(getattr(cfg, "final_rms", False)),
        readout=FinalReadout(model.ln_final, model.W_U.detach(), None if b_U is None else b_U.detach()),
        kv_group=np.arange(n_heads) // max(1, n_heads // n_kv),
        has_neuron_hook=has_neuron_hook,
    )


def _post_gamma(block: Any, name: str, d_model: int) -> torch.Tensor | None:
    norm = getattr(block, name, None)
    return None if norm is None else norm_affine(norm, d_model)[0]


# ---- the forward pass -------------------------------------------------------------------------------------------
def collect_writers(model: Any, ids: np.ndarray, weights: A.Weights, *, neuron_positions: np.ndarray) -> A.Writers:
    """One forward pass keeping only what attribution reads; neuron activations only at ``neuron_positions``."""
    L = int(model.cfg.n_layers)
    hook_dict = getattr(model, "hook_dict", {}) or {}
    has_mlp = weights.W_out is not None
    wanted = [hooks.EMBED, hooks.POS_EMBED, hooks.FINAL_SCALE] + hooks.residual_rows(L)
    for l in range(L):
        wanted += [hooks.attn_z(l), hooks.attn_out(l), hooks.post_norm_scale(l, "attn")]
        if has_mlp:
            wanted += [hooks.mlp_out(l), hooks.post_norm_scale(l, "mlp")]
    wanted = [n for n in wanted if n in hook_dict]
    saved: dict[str, torch.Tensor] = {}
    npos = torch.as_tensor(neuron_positions, dtype=torch.long)

    def save(name: str, positions: torch.Tensor | None = None):  # keyed by the name asked for (aliases differ)
        def fn(t, hook):
            saved[name] = (t[0] if positions is None else t[0, positions.to(t.device)]).detach().float()

        return fn

    fwd = [(n, save(n)) for n in wanted]
    if len(npos) and weights.has_neuron_hook:
        fwd += [(hooks.mlp_post(l), save(hooks.mlp_post(l), npos)) for l in range(L)]
    if _FINAL_IN in hook_dict:  # stop at the final norm: the unembedding (~40 % of GPT-2 small's pass) is not needed
        fwd.append((_FINAL_IN, _stop))
    tokens = torch.as_tensor(ids)[None].to(model.W_U.device)
    with torch.inference_mode():
        try:
            model.run_with_hooks(tokens, fwd_hooks=fwd, return_type=None)
        except _Stopped:
            pass
    need = [hooks.EMBED, *hooks.residual_rows(L)] + [hooks.attn_z(l) for l in range(L)] + [hooks.attn_out(l) for l in range(L)]
    missing = [n for n in need if n not in saved]
    if missing:
        raise RuntimeError(
            f"the model's hooks lack {missing[:3]}: attribution needs TransformerLens's classic hook names "
            "(a TransformerBridge in compatibility mode, or a HookedTransformer)"
        )
    resid = torch.stack([saved[n] for n in hooks.residual_rows(L)])
    return A.Writers(
        ids=np.asarray(ids, dtype=np.int64),
        embed=saved[hooks.EMBED],
        pos_embed=saved.get(hooks.POS_EMBED),
        z=[saved[hooks.attn_z(l)] for l in range(L)],
        attn_out=[saved[hooks.attn_out(l)] for l in range(L)],
        mlp_out=[saved[hooks.mlp_out(l)] for l in range(L)] if has_mlp else None,
        resid=resid,
        row_scale=row_scales(model.ln_final, resid),
        model_scale=None if hooks.FINAL_SCALE not in saved else saved[hooks.FINAL_SCALE][..., 0],
        attn_post_scale=[_scale(saved, hooks.post_norm_scale(l, "attn")) for l in range(L)],
        mlp_post_scale=[_scale(saved, hooks.post_norm_scale(l, "mlp")) for l in range(L)],
        neuron_positions=np.asarray(neuron_positions, dtype=np.int64),
        neuron_acts={l: saved[hooks.mlp_post(l)] for l in range(L) if hooks.mlp_post(l) in saved},
    )


#: the final norm's input: the forward pass is stopped there (everything attribution reads is computed by then)
_FINAL_IN = "ln_final.hook_in"


class _Stopped(Exception):
    """Raised by a hook to end the forward pass early (run_with_hooks removes its hooks on the way out)."""


def _stop(t, hook):
    raise _Stopped


def _scale(saved: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    t = saved.get(name)
    return None if t is None else t[..., 0]


def row_scales(ln_final: Any, resid: torch.Tensor) -> torch.Tensor:
    """The final norm's scale of each residual vector on its own [R, T] (what the lens divides it by), read from
    the norm's own ``hook_scale`` while it normalises the rows; ones for a model without a final norm."""
    hook = getattr(ln_final, "hook_scale", None)
    if hook is None:
        return torch.ones(resid.shape[:-1])
    seen: list[torch.Tensor] = []
    handle = hook.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().float()))
    try:
        with torch.inference_mode():
            ln_final(resid.to(next(iter(ln_final.parameters()), resid).dtype))
    finally:
        handle.remove()
    if not seen:
        return torch.ones(resid.shape[:-1])
    return seen[-1][..., 0].reshape(resid.shape[:-1])


__all__ = ["AttributionRun", "collect_weights", "collect_writers", "norm_affine", "row_scales"]
