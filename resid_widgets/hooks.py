"""TransformerLens hook names, in one place.

Residual rows: row 0 = ``blocks.0.hook_resid_pre`` (the embeddings), row l+1 = ``blocks.l.hook_resid_post``.
A *sequential* block computes ``resid_mid = resid_pre + attn_out`` and ``resid_post = resid_mid + mlp_out``;
a *parallel* block (GPT-NeoX / Pythia ``use_parallel_residual``, TransformerLens ``parallel_attn_mlp``) has no
``resid_mid``: ``resid_post = resid_pre + attn_out + mlp_out``.
"""

from __future__ import annotations

from typing import Any

#: the final norm's output (the seed 000 "final layer" projection).
FINAL_NORM = "ln_final.hook_normalized"


def resid_pre(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_pre"


def resid_mid(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_mid"


def resid_post(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def attn_out(layer: int) -> str:
    return f"blocks.{layer}.hook_attn_out"


def mlp_out(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


#: what the token / positional embedding writes into the residual stream (attribution writers)
EMBED = "hook_embed"
POS_EMBED = "hook_pos_embed"
#: the final norm's scale (sqrt(var + eps)), one per position, as the forward pass computed it
FINAL_SCALE = "ln_final.hook_scale"


def attn_z(layer: int) -> str:
    """Every head's mixed values ``z`` [batch, pos, n_heads, d_head] (query heads, K/V groups expanded)."""
    return f"blocks.{layer}.attn.hook_z"


def mlp_post(layer: int) -> str:
    """The MLP's neuron activations [batch, pos, d_mlp] (what ``W_out`` reads)."""
    return f"blocks.{layer}.mlp.hook_post"


def post_norm_scale(layer: int, sublayer: str) -> str:
    """The scale of a norm applied to a sublayer's output before it joins the residual stream
    (Gemma-2/3, OLMo-2 "sandwich" norms): ``sublayer`` is "attn" (``ln1_post``) or "mlp" (``ln2_post``)."""
    return f"blocks.{layer}.{'ln1' if sublayer == 'attn' else 'ln2'}_post.hook_scale"


def residual_rows(n_layers: int) -> list[str]:
    """The R = n_layers + 1 residual-stream points the lens reads, in order."""
    return [resid_pre(0)] + [resid_post(l) for l in range(n_layers)]


def block_hooks(layer: int, *, parallel: bool) -> list[str]:
    """The hooks of one block the analyses read, in the order the forward pass computes them."""
    if parallel:
        return [resid_pre(layer), attn_out(layer), mlp_out(layer), resid_post(layer)]
    return [resid_pre(layer), attn_out(layer), resid_mid(layer), mlp_out(layer), resid_post(layer)]


def needed_hooks(n_layers: int, *, parallel: bool) -> list[str]:
    return [name for l in range(n_layers) for name in block_hooks(l, parallel=parallel)]


def is_parallel(model: Any) -> bool:
    """Whether the model's blocks run attention and MLP in parallel, judged by what the model provides:
    TransformerLens's ``cfg.parallel_attn_mlp``, or a hook table without ``resid_mid``."""
    if bool(getattr(model.cfg, "parallel_attn_mlp", False)):
        return True
    hook_dict = getattr(model, "hook_dict", None)
    if isinstance(hook_dict, dict) and resid_pre(0) in hook_dict:
        return resid_mid(0) not in hook_dict
    return False


__all__ = [
    "EMBED",
    "FINAL_NORM",
    "FINAL_SCALE",
    "POS_EMBED",
    "attn_out",
    "attn_z",
    "block_hooks",
    "is_parallel",
    "mlp_out",
    "mlp_post",
    "needed_hooks",
    "post_norm_scale",
    "resid_mid",
    "resid_post",
    "resid_pre",
    "residual_rows",
]
