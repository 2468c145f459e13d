"""A model whose forward pass runs elsewhere, seen through TransformerLens's canonical hook names.

``CapturedModel`` wraps a raw ``TransformerBridge`` (booted with an accelerate device map, so parts may
sit on other devices or on disk) or a ``RemoteBridge`` (a ``Driver``: vLLM, or any engine that captures
``blocks.{l}.hook_out``). It offers what ``Session`` reads from a model (``run_with_cache`` with the
classic hook names, ``W_U``, ``b_U``, ``ln_final``, ``cfg``, ``to_tokens``, ``tokenizer``) and builds the
classic names from the canonical captures::

    resid_pre(0)  = blocks.0.hook_in           resid_post(l) = blocks.l.hook_out = resid_pre(l + 1)
    attn_out(l)   = blocks.l.attn.hook_out     mlp_out(l)    = blocks.l.mlp.hook_out
                    (blocks.l.ln1_post / ln2_post.hook_out where sandwich norms follow them: Gemma-2/3, OLMo-2)
    resid_mid(l)  = resid_pre(l) + attn_out(l)  (sequential blocks)
    ln_final.hook_normalized = PreNorm(resid_post(L - 1))

LayerNorm models' vectors are centred (as compatibility mode's centred writing weights leave them), and
the readout is the checkpoint's final norm and unembedding folded and centred (``readout.fold_readout``),
so every quantity equals compatibility mode's where both run. A driver's captures are counted in
``bytes_moved``. A driver that captures only the residual stream (``blocks.{l}.hook_out``: vLLM's stock
overlay) gives the rows alone; what needs the sublayers is marked in ``lacks`` (``capabilities``).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch

from resid_widgets import hooks
from resid_widgets.session.backends.capabilities import capture_plan, row_zero, rows_only_cache
from resid_widgets.session.backends.readout import PreNorm, block_writers, centre, effective_norm_weight, fold_readout


class RemoteError(ConnectionError):
    """The engine behind a driver could not be reached or refused the request."""


class CapturedModel:
    """What ``Session`` reads from a model, for a bridge that only reports captured activations."""

    def __init__(self, bridge: Any, tensors: dict[str, torch.Tensor | None], *, kind: str, name: str, dtype: torch.dtype = torch.float32):
        self.bridge = bridge
        self.adapter = bridge.adapter  # the architecture's output transform (soft-cap, logit scaling)
        self.kind = kind  # "device_map" | "driver"
        bc = bridge.cfg
        norm = "LN" if str(getattr(bc, "normalization_type", "LN")).upper().startswith("LN") else "RMS"
        cap = float(getattr(bc, "output_logits_soft_cap", 0.0) or 0.0)
        self.cfg = SimpleNamespace(
            n_layers=int(bc.n_layers),
            n_ctx=int(bc.n_ctx),
            model_name=name,
            normalization_type=norm,
            default_prepend_bos=bool(getattr(bc, "default_prepend_bos", True)),
            output_logits_soft_cap=cap,
            parallel_attn_mlp=_is_parallel(bridge),
            eps=float(getattr(bc, "eps", 1e-5)),
        )
        w = effective_norm_weight(tensors.get("norm.weight"), self.adapter)
        self._writers = block_writers(self.adapter)  # what each block adds to the residual stream
        self._centre_unembed = cap <= 0
        self.W_U, self.b_U = fold_readout(w, tensors.get("norm.bias"), tensors["head.weight"], tensors.get("head.bias"),
                                          centre_unembed=self._centre_unembed, layer_norm=norm == "LN", dtype=dtype)
        self.ln_final = PreNorm(norm, self.cfg.eps)
        self.bytes_moved = 0  # bytes of activations and logits the engine returned (all forward passes)
        self.last_bytes = 0  # ... in the latest forward pass
        self.on_stage: Callable[[str], None] | None = None  # told "running" / "reading out" around a forward pass
        self._available = frozenset(getattr(bridge, "_hook_registry", None) or getattr(bridge, "hook_dict", {}))
        self._pos_weight = tensors.get("pos.weight")  # a learned positional embedding, for a rows-only row 0
        embed_is_row0 = self._pos_weight is not None or "pos_embed" not in self.adapter.component_mapping
        self._capture, self.lacks = capture_plan(self._available, self.cfg.n_layers, self._writers, kind=self.kind,
                                                 embed_is_row0=embed_is_row0)

    # ---- what Session reads -------------------------------------------------------------------
    @property
    def tokenizer(self):
        return getattr(self.bridge, "tokenizer", None)

    def to_tokens(self, text, prepend_bos=None, truncate=True):
        return self.bridge.to_tokens(text, prepend_bos=prepend_bos, truncate=truncate)

    def parameters(self) -> Iterator[torch.Tensor]:
        yield self.W_U
        yield self.b_U

    @property
    def remote(self) -> bool:
        return self.kind == "driver"

    def run_with_cache(self, batch_ids: torch.Tensor, names_filter: Any = None, **kwargs: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits [B, T, V] (compatibility mode's: centred when W_U is) and the classic hooks' activations."""
        if kwargs.get("past_key_values") is not None:
            raise NotImplementedError("no key/value cache reuse through a captured bridge")
        wanted = set(self._capture)
        self._stage("running")
        try:
            if self.remote:
                # logits for every position would be T x vocab numbers over the wire: the final row is read
                # out here from the last block's output instead
                _, raw = self.bridge.run_with_cache(batch_ids.cpu(), names_filter=lambda n: n in wanted, return_type=None, return_logits=False)
                logits = None
            else:
                logits, raw = self.bridge.run_with_cache(batch_ids, names_filter=lambda n: n in wanted)
        except (ConnectionError, TimeoutError, OSError) as e:
            raise RemoteError(f"the {self.kind} engine failed during the forward pass ({type(e).__name__}: {e}); nothing was changed, try again") from e
        self._stage("reading out")
        raw = {k: _to_torch(v) for k, v in raw.items()}
        self.last_bytes = sum(int(t.numel() * t.element_size()) for t in raw.values()) + (0 if logits is None else int(logits.numel() * logits.element_size()))
        if self.remote:
            self.bytes_moved += self.last_bytes
        cache = self._classic(raw)
        if logits is None:
            logits = self._final_logits(cache[hooks.FINAL_NORM])
        else:
            logits = logits.to(self.W_U.device).float()
            if self._centre_unembed:
                logits = logits - logits.mean(-1, keepdim=True)
        return logits, cache

    # ---- helpers --------------------------------------------------------------------------------
    def _stage(self, stage: str) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)

    def _classic(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        dev = self.W_U.device
        c = centre if self.cfg.normalization_type == "LN" else (lambda x: x)
        get = lambda name: c(raw[name].to(dev).float())  # noqa: E731
        if self.lacks:  # rows only
            out = rows_only_cache(get, self.cfg.n_layers, c(row_zero(raw, self._pos_weight).to(dev).float()))
            out[hooks.FINAL_NORM] = self.ln_final(out[hooks.resid_post(self.cfg.n_layers - 1)])
            return out
        out: dict[str, torch.Tensor] = {}
        pre = get("blocks.0.hook_in")
        for l in range(self.cfg.n_layers):
            attn, mlp = (get(f"blocks.{l}.{w}.hook_out") for w in self._writers)
            post = get(f"blocks.{l}.hook_out")
            out[hooks.resid_pre(l)] = pre
            out[hooks.attn_out(l)] = attn
            if not self.cfg.parallel_attn_mlp:
                out[hooks.resid_mid(l)] = pre + attn
            out[hooks.mlp_out(l)] = mlp
            out[hooks.resid_post(l)] = post
            pre = post
        out[hooks.FINAL_NORM] = self.ln_final(pre)
        return out

    def _final_logits(self, normed: torch.Tensor) -> torch.Tensor:
        """[B, T, V] from ln_final's output, a block of positions at a time (the readout's formula)."""
        from resid_widgets.analyses.lens import FinalReadout

        readout = FinalReadout(lambda x: x, self.W_U, self.b_U, _output_transform(self.adapter, self.cfg.output_logits_soft_cap))
        B, T, d = normed.shape
        flat = normed.reshape(B * T, d)
        out = torch.empty((B * T, self.W_U.shape[1]), dtype=torch.float32, device=self.W_U.device)
        step = max(1, 16_000_000 // int(self.W_U.shape[1]))
        for i in range(0, B * T, step):
            readout.logits(flat[i : i + step], out=out[i : i + step])
        return out.view(B, T, -1)

    def close(self) -> None:
        close = getattr(self.bridge, "close", None)
        if callable(close):
            close()


def _is_parallel(bridge: Any) -> bool:
    if bool(getattr(bridge.cfg, "parallel_attn_mlp", False)):
        return True
    hf_cfg = getattr(getattr(bridge, "original_model", None), "config", None) or getattr(getattr(bridge, "_driver", None), "hf_config", None)
    return bool(getattr(hf_cfg, "use_parallel_residual", False))


def _output_transform(adapter: Any, cap: float = 0.0):
    """What the model does to its logits after the unembedding, as ``Session._output_transform`` says: the
    adapter's override (logit scaling), else the config's soft-cap (Gemma-2), else nothing."""
    from resid_widgets.analyses.lens import softcap

    method = getattr(type(adapter), "apply_output_logits_transform", None)
    if method is not None:
        from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter

        if method is not ArchitectureAdapter.apply_output_logits_transform:
            return adapter.apply_output_logits_transform
    return softcap(cap) if cap > 0 else None


def _to_torch(t: Any) -> torch.Tensor:
    from transformer_lens.model_bridge.driver_protocol import to_torch

    return to_torch(t)


__all__ = ["CapturedModel", "RemoteError"]
