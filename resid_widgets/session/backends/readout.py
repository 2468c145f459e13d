"""The lens readout built from a checkpoint's own final norm and unembedding, processed exactly as
TransformerLens's compatibility mode processes them, for models that compatibility mode cannot hold
(parts offloaded by a device map; no local model behind a ``RemoteBridge``).

Compatibility mode (what ``Session(path)`` reads) folds the final norm's weight ``w`` and bias ``beta``
into the unembedding and centres it over the vocabulary (when the model has no logit soft-cap)::

    W_U = diag(w) W_raw - mean_v(diag(w) W_raw)        # [d_model, d_vocab]; LayerNorm: also minus its
                                                        # mean over d_model (first), as fold_ln centres it
    b_U = b_raw + beta W_raw - mean_v(b_raw + beta W_raw)
    ln_final(r) = (r - mean(r)) / sqrt(var(r) + eps)    # LayerNorm; RMSNorm: r / sqrt(mean(r^2) + eps)

so ``ln_final(r) @ W_U + b_U`` differs from the model's own ``lm_head(norm(r))`` only by a constant per
cell (probabilities, ranks, entropy and KL are equal; the logits shift). LayerNorm models' residual rows
are centred the same way (``center_writing_weights``): see ``centre``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


class PreNorm(nn.Module):
    """The final norm without its weight and bias (folded into W_U / b_U): TransformerLens's
    ``LayerNormPre`` / ``RMSNormPre``. Input [..., d_model] -> output [..., d_model] (same dtype)."""

    def __init__(self, kind: str, eps: float):
        super().__init__()
        if kind not in ("LN", "RMS"):
            raise ValueError(f"final norm must be LayerNorm ('LN') or RMSNorm ('RMS'), got {kind!r}")
        self.kind, self.eps = kind, float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        if self.kind == "LN":
            y = y - y.mean(-1, keepdim=True)
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(x.dtype)


def centre(x: torch.Tensor) -> torch.Tensor:
    """Each vector minus its mean over d_model (what compatibility mode's centred writing weights give
    LayerNorm models' residual stream)."""
    return x - x.mean(-1, keepdim=True)


def fold_readout(
    norm_weight: torch.Tensor | None,
    norm_bias: torch.Tensor | None,
    unembed_weight: torch.Tensor,
    unembed_bias: torch.Tensor | None,
    *,
    centre_unembed: bool = True,
    layer_norm: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_U [d_model, d_vocab], b_U [d_vocab]) from the final norm's weight / bias [d_model] and the
    lm_head's weight [d_vocab, d_model] / bias [d_vocab]; folded and centred as compatibility mode does.
    The fold runs a block of the vocabulary at a time in float32 (a bf16 head is never copied whole to
    float32 at once) and keeps ``dtype``."""
    V, d = unembed_weight.shape
    out_W = torch.empty((d, V), dtype=dtype, device=unembed_weight.device)
    out_b = torch.zeros(V, dtype=torch.float32, device=unembed_weight.device)
    w = None if norm_weight is None else norm_weight.float().to(unembed_weight.device)
    beta = None if norm_bias is None else norm_bias.float().to(unembed_weight.device)
    mean_W = torch.zeros(d, dtype=torch.float64, device=unembed_weight.device)
    step = max(1, 4_000_000 // max(1, d))
    for v0 in range(0, V, step):
        block = unembed_weight[v0 : v0 + step].float().T  # [d, chunk]
        if beta is not None:
            out_b[v0 : v0 + step] += beta @ block
        if w is not None:
            block = block * w[:, None]
        if layer_norm:  # a LayerNorm's output has zero mean: W_U's component along ones(d_model) reads nothing
            block = block - block.mean(0, keepdim=True)
        mean_W += block.double().sum(-1)
        out_W[:, v0 : v0 + step] = block.to(dtype)
    if unembed_bias is not None:
        out_b += unembed_bias.float().to(out_b.device)
    if centre_unembed:
        mean = (mean_W / V).to(torch.float32)
        for v0 in range(0, V, step):
            out_W[:, v0 : v0 + step] = (out_W[:, v0 : v0 + step].float() - mean[:, None]).to(dtype)
        out_b -= out_b.mean()
    return out_W, out_b


@contextlib.contextmanager
def materialised(module: nn.Module):
    """The module's parameters readable even when accelerate offloaded them (to CPU or disk)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and any(p.device.type == "meta" for p in module.parameters(recurse=False)):
        from accelerate.utils import align_module_device

        with align_module_device(module, torch.device("cpu")):
            yield module
        return
    yield module


def tensors_from_modules(norm: nn.Module, head: nn.Module) -> dict[str, torch.Tensor | None]:
    """The final norm's and the lm_head's tensors (copied out of offloaded modules)."""
    out: dict[str, torch.Tensor | None] = {}
    for prefix, module in (("norm", norm), ("head", head)):
        module = getattr(module, "_original_component", module)  # a TransformerBridge component wraps the HF module
        with materialised(module):
            for name in ("weight", "bias"):
                t = getattr(module, name, None)
                out[f"{prefix}.{name}"] = None if t is None else t.detach().clone()
    return out


#: older checkpoint names of an unembedding the current transformers class calls ``lm_head``
_HEAD_ALIASES = {"lm_head": ("embed_out",)}


def tensors_from_state(state: Mapping[str, torch.Tensor], norm_path: str, head_path: str, embed_path: str | None,
                       *, tied: bool | None = None, pos_path: str | None = None) -> dict[str, torch.Tensor | None]:
    """The same tensors from a state dict (a driver's ``state_dict()``, a checkpoint's tensors). The
    input embedding stands in for the lm_head only when the model ties them (``tied`` True, or unknown
    and no lm_head among the tensors). ``pos_path``: also the learned positional embedding
    (``pos.weight`` [n_ctx, d_model]; row 0 of a driver that captures ``embed.hook_out`` only)."""
    def get(*keys):
        for key in keys:
            if key in state:
                return torch.as_tensor(state[key]).detach()
        return None

    heads = (head_path, *_HEAD_ALIASES.get(head_path, ()))
    out = {
        "norm.weight": get(f"{norm_path}.weight"),
        "norm.bias": get(f"{norm_path}.bias"),
        "head.weight": None if tied else get(*(f"{h}.weight" for h in heads)),
        "head.bias": None if tied else get(*(f"{h}.bias" for h in heads)),
        "pos.weight": get(f"{pos_path}.weight") if pos_path else None,
    }
    if out["head.weight"] is None and tied is not False and embed_path is not None:
        out["head.weight"] = get(f"{embed_path}.weight")
    if out["head.weight"] is None:
        raise KeyError(f"no {head_path}.weight{' (nor a tied ' + embed_path + '.weight)' if tied is not False and embed_path else ''} among the weights")
    if out["norm.weight"] is None:
        raise KeyError(f"no {norm_path}.weight among the weights: cannot apply the final norm")
    return out


def tensors_from_checkpoint(directory: str | os.PathLike, norm_path: str, head_path: str, embed_path: str | None,
                            *, pos_path: str | None = None) -> dict[str, torch.Tensor | None]:
    """Only the final norm's and the unembedding's tensors, read from a Hugging Face directory's
    safetensors files (the rest of the checkpoint is not loaded)."""
    import json

    from safetensors import safe_open

    files = sorted(Path(directory).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {directory}: cannot read the unembedding for the lens readout")
    config = Path(directory) / "config.json"
    tied = json.loads(config.read_text()).get("tie_word_embeddings") if config.is_file() else None
    heads = (head_path, *_HEAD_ALIASES.get(head_path, ()))
    wanted = {f"{p}.{n}" for p in (norm_path, *heads, embed_path, pos_path) if p for n in ("weight", "bias")}
    state: dict[str, torch.Tensor] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in wanted & set(fh.keys()):
                state[key] = fh.get_tensor(key)
    return tensors_from_state(state, norm_path, head_path, embed_path, tied=tied, pos_path=pos_path)


def effective_norm_weight(weight: torch.Tensor | None, adapter: Any) -> torch.Tensor | None:
    """The final norm's multiplier: Gemma's RMSNorm scales by ``1 + weight``."""
    if weight is not None and "gemma" in type(adapter).__name__.lower():
        return weight.float() + 1.0
    return weight


def block_writers(adapter: Any) -> tuple[str, str]:
    """The block submodules whose outputs are added to the residual stream: the attention and MLP, or their
    post-norms where the block has them (Gemma-2/3, OLMo-2 "sandwich" norms)."""
    subs = adapter.component_mapping["blocks"].submodules
    return ("ln1_post" if "ln1_post" in subs else "attn"), ("ln2_post" if "ln2_post" in subs else "mlp")


def hf_paths(adapter: Any) -> tuple[str, str, str | None]:
    """(final norm, unembedding, input embedding) module paths in the Hugging Face model, from a
    TransformerLens architecture adapter's component mapping."""
    mapping = adapter.component_mapping
    name = lambda key: getattr(mapping.get(key), "name", None)  # noqa: E731
    norm, head = name("ln_final"), name("unembed")
    if norm is None or head is None:
        raise ValueError(f"{type(adapter).__name__} names no final norm or unembedding: the lens cannot be read out")
    return norm, head, name("embed")


__all__ = ["PreNorm", "block_writers", "centre", "effective_norm_weight", "fold_readout", "hf_paths", "materialised", "tensors_from_checkpoint", "tensors_from_modules", "tensors_from_state"]
