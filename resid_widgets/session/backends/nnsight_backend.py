"""nnsight: the model runs inside ``LanguageModel.trace`` (in this process, nnsight's own serialise /
deserialise path with ``remote="local"``, or on NDIF with ``remote=True``) and the lens readout runs
there too, so only per-cell statistics leave the trace, never the residual stream.

Inside the trace, after the forward pass (layers read in execution order): every residual row goes through
the model's own final norm and ``lm_head`` (``read_block``, a block of positions at a time), minus each
cell's mean logit over the vocabulary when the model has no soft-cap (= compatibility mode's centred
``W_U``, so the numbers equal ``Session(path)``'s), giving top-k ids / logits, the log-normaliser, entropy,
target logits and ranks, KL to the model's output and the output top-1's rank; the norms of the rows
(centred for LayerNorm models) and of attention / MLP outputs, the additivity parts, and the fraction of
each row's squared norm in the first k directions of W_U for the k of every tau the view offers.

Bytes leaving the trace per cell (row x position): the lens, 8k + 16 + 8n (top-k ids as int32 and logits as
float32, log-normaliser, entropy, KL, the output top-1's rank; n targets' logits and ranks), so <= 64 for
k <= 6 without targets; plus the norm (4), the projection fraction at the requested tau (4) and at the view's
tau grid (2 per distinct k, float16), and per block cell the attention / MLP norms and additivity parts.
"""

from __future__ import annotations

import copy
import functools
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import torch

from resid_widgets.analyses.lens import FinalReadout, Reference, read_block
from resid_widgets.session.backends.captured import RemoteError, _output_transform
from resid_widgets.session.backends.readout import (
    PreNorm,
    block_writers,
    effective_norm_weight,
    fold_readout,
    hf_paths,
    tensors_from_checkpoint,
    tensors_from_modules,
)


def adapter_for(hf_config: Any, name: str) -> Any:
    """TransformerLens's architecture adapter for a Hugging Face config (module paths, output transform)."""
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
    from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    arch = determine_architecture_from_hf_config(hf_config)
    return ArchitectureAdapterFactory.select_architecture_adapter(build_bridge_config_from_hf(hf_config, arch, name, torch.float32))


class NNsightModel:
    """What ``Session`` reads from a model, for an nnsight ``LanguageModel``; ``stream`` replaces the
    local forward pass and readout (``reads_out_in_trace``)."""

    reads_out_in_trace = True

    def __init__(self, lm: Any, *, remote: Any = "local", weights: Any = None):
        if remote not in ("local", True, False):
            raise ValueError(f"remote must be 'local' (nnsight's serialisation, in this process), True (NDIF) or False, not {remote!r}")
        self.lm, self.remote = lm, remote
        hf_cfg = lm.config
        name = str(getattr(hf_cfg, "_name_or_path", "") or "nnsight model")
        self.adapter = adapter_for(hf_cfg, name)
        bc = self.adapter.cfg
        norm_path, head_path, embed_path = hf_paths(self.adapter)
        blocks = self.adapter.component_mapping["blocks"]
        attn, mlp = block_writers(self.adapter)  # what each block adds to the residual stream
        self._paths = dict(layers=blocks.name, attn=blocks.submodules[attn].name, mlp=blocks.submodules[mlp].name, norm=norm_path, head=head_path)
        kind = "LN" if str(bc.normalization_type).upper().startswith("LN") else "RMS"
        cap = float(getattr(bc, "output_logits_soft_cap", 0.0) or 0.0)
        self.cfg = SimpleNamespace(n_layers=int(bc.n_layers), n_ctx=int(bc.n_ctx), model_name=f"{name} (nnsight{', NDIF' if remote is True else ''})",
                                   normalization_type=kind, default_prepend_bos=bool(getattr(bc, "default_prepend_bos", True)),
                                   output_logits_soft_cap=cap, parallel_attn_mlp=bool(getattr(hf_cfg, "use_parallel_residual", False)), eps=float(bc.eps))
        module = lm._module
        tensors = tensors_from_modules(module.get_submodule(norm_path), module.get_submodule(head_path)) if weights is None else tensors_from_checkpoint(weights, norm_path, head_path, embed_path)
        if any(t is not None and t.device.type == "meta" for t in tensors.values()):
            raise ValueError("the LanguageModel's weights are not loaded here (meta): pass the checkpoint directory for the projection basis, weights='/path/to/model'")
        self.centre_logits = cap <= 0
        self.W_U, self.b_U = fold_readout(effective_norm_weight(tensors["norm.weight"], self.adapter), tensors.get("norm.bias"), tensors["head.weight"], tensors.get("head.bias"),
                                          centre_unembed=self.centre_logits, layer_norm=kind == "LN")
        self.ln_final = PreNorm(kind, self.cfg.eps)
        from transformer_lens.model_bridge.sources._bridge_builder import configure_tokenizer

        # a copy set up as boot_transformers sets up its tokenizer (the LanguageModel's own is left alone)
        self.tokenizer = configure_tokenizer(copy.deepcopy(lm.tokenizer), self.adapter.cfg) if lm.tokenizer is not None else None
        self.bytes_moved = 0
        self.last_bytes = 0
        self.on_stage = None

    def to_tokens(self, text, prepend_bos=None, truncate=True):
        """TransformerLens's tokenisation (BOS as ``boot_transformers`` adds it), so text prompts give the
        same ids as ``Session(path)``."""
        from transformer_lens.model_bridge.remote_bridge import RemoteBridge

        return RemoteBridge.to_tokens(SimpleNamespace(tokenizer=self.tokenizer, cfg=self.adapter.cfg), text, prepend_bos=prepend_bos, truncate=truncate)

    def parameters(self):
        yield self.W_U
        yield self.b_U

    def run_with_cache(self, *args, **kwargs):
        raise NotImplementedError("an nnsight session reads out inside the trace: use Session.analyze / stream (no batches, no raw activations)")

    # ---- the analysis ---------------------------------------------------------------------------
    def stream(self, req: Any, ctx: Any) -> Iterator[Any]:
        from resid_widgets.session.backends.nnsight_analysis import analysis_from_trace

        yield from analysis_from_trace(self, req, ctx)

    def trace(self, ids: np.ndarray, *, top_k: int, target_ids: list[int], U: torch.Tensor, ks: list[int], k: int, chunk_elements: int) -> dict[str, np.ndarray]:
        """Run the model in an nnsight trace; the per-cell statistics that leave it (numpy)."""
        lm, p = self.lm, self._paths
        get = lambda path: functools.reduce(getattr, path.split("."), lm)  # noqa: E731
        layers, norm, head = get(p["layers"]), get(p["norm"]), get(p["head"])
        transform = _centre_logits if self.centre_logits else _output_transform(self.adapter, self.cfg.output_logits_soft_cap)
        settings = dict(top_k=top_k, target_ids=list(target_ids), U=U, ks=list(ks), k=k, chunk_elements=chunk_elements, transform=transform,
                        layer_norm=self.cfg.normalization_type == "LN", parallel=self.cfg.parallel_attn_mlp,
                        centre=self.centre_logits)
        if self.remote is not False:
            _pickle_by_value()
        self._last_stage = None
        self._stage("queued" if self.remote is True else "running")
        where = {False: {}, "local": {"remote": "local"}}.get(self.remote) or {"backend": _ndif_backend(lm, self._stage)}
        try:
            with lm.trace(torch.as_tensor(ids)[None], **where):
                shipped = list().save()
                rows, attns, mlps = [], [], []
                for i, layer in enumerate(layers):
                    if i == 0:
                        rows.append(_first(layer.input))
                    attns.append(_first(getattr(layer, p["attn"]).output))
                    mlps.append(_first(getattr(layer, p["mlp"]).output))
                    rows.append(_first(layer.output))
                logits = lm.output.logits
                shipped.append(_read_rows(rows, attns, mlps, logits, norm, head, settings))
        except (ConnectionError, TimeoutError, OSError) as e:
            raise RemoteError(f"the nnsight trace failed ({type(e).__name__}: {e}); nothing was changed, try again") from e
        except Exception as e:
            if type(e).__name__ != "RemoteError" or not type(e).__module__.startswith("nnsight"):
                raise
            # NDIF refused the request (401 key, 503 busy...) or the job failed there: the server's own words
            raise RemoteError(f"NDIF refused or failed the request: {e}; nothing was changed") from e
        self._stage("reading out")
        out = shipped[0]
        self.last_bytes = sum(int(a.nbytes) for a in out.values())
        self.bytes_moved += self.last_bytes
        return out

    def _stage(self, stage: str) -> None:
        if self.on_stage is not None and stage != getattr(self, "_last_stage", None):
            self._last_stage = stage
            self.on_stage(stage)


def _ndif_backend(lm: Any, stage: Any) -> Any:
    """nnsight's own NDIF backend (host and API key from nnsight's configuration: ``NDIF_HOST`` /
    ``NDIF_API_KEY``, ``CONFIG.API``) whose status updates (QUEUED, RUNNING) also reach ``stage``."""
    try:
        backend = lm._remote_backend(True, True, None, False)
    except Exception as e:  # the model's key names it on the hub: a local directory has none
        raise ValueError(f"NDIF runs models it hosts, named as on the Hugging Face hub (LanguageModel('org/name')); "
                         f"this one has no hub name ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    shown = backend.display.update

    def update(response: Any) -> None:
        shown(response)
        name = str(getattr(response.status, "value", response.status)).lower()
        if name in ("queued", "running"):
            stage(name)

    backend.display.update = update
    return backend


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def _centre_logits(z: torch.Tensor) -> torch.Tensor:
    """Each cell's logits minus their mean over the vocabulary: compatibility mode's centred W_U / b_U."""
    return z.sub_(z.mean(-1, keepdim=True))


def _read_rows(rows, attns, mlps, logits, norm, head, s) -> dict[str, np.ndarray]:
    """Runs where the model runs: residual rows [1, T, d] -> the statistics that leave the trace. Sent by
    value (``_pickle_by_value``): nothing here may import resid_widgets."""
    with torch.inference_mode():
        R = len(rows)
        resid = torch.stack([r[0].float() for r in rows])  # [R, T, d], stays where the model is
        if s["layer_norm"]:
            resid = resid - resid.mean(-1, keepdim=True)
        attn = torch.stack([a[0].float() for a in attns])
        mlp = torch.stack([m[0].float() for m in mlps])
        if s["layer_norm"]:
            attn, mlp = attn - attn.mean(-1, keepdim=True), mlp - mlp.mean(-1, keepdim=True)
        W = head.weight.T
        readout = FinalReadout(norm, W, getattr(head, "bias", None), s["transform"])
        final = logits[0].float().clone()
        if s["centre"]:  # the model's own logits are already soft-capped where it caps; centring is ours
            final = final - final.mean(-1, keepdim=True)
        lens = read_block(readout.normalise(resid[:-1]).transpose(0, 1), readout, top_k=s["top_k"], target_ids=s["target_ids"],
                          reference=Reference.from_logits(final), chunk_elements=s["chunk_elements"])
        last = read_block(resid[-1:, :, :1].transpose(0, 1), readout, top_k=s["top_k"], target_ids=s["target_ids"], known_logits=final[:, None],
                          chunk_elements=s["chunk_elements"])
        formula = readout.logits(readout.normalise(resid[-1, -1:]))[0]
        U = s["U"].to(resid.device)
        r2 = resid.square().sum(-1, keepdim=True)
        cum = torch.cumsum((resid @ U).square(), -1)
        frac = torch.where(r2 > 0, cum / r2.clamp_min(1e-30), torch.zeros_like(cum))[..., [k - 1 for k in s["ks"]]]
        pre, post = resid[:-1], resid[1:]
        identities = [(pre + attn + mlp, post)] if s["parallel"] else [(pre + attn, pre + attn), (pre + attn + mlp, post)]
        out = {name: np.concatenate([lens[name].swapaxes(0, 1), last[name].swapaxes(0, 1)], axis=0) for name in lens}
        out = {k: v.astype(np.int32) if v.dtype == np.int64 else v for k, v in out.items() if k not in ("top_probs", "target_probs")}
        out.update(
            resid_norm=resid.norm(dim=-1).numpy(force=True),
            attn_norm=attn.norm(dim=-1).numpy(force=True),
            mlp_norm=mlp.norm(dim=-1).numpy(force=True),
            proj_grid=frac.numpy(force=True).astype(np.float16),  # the view's tau grid (its payload has 8 bits)
            proj_exact=frac[..., s["ks"].index(s["k"])].numpy(force=True).astype(np.float32),  # the requested tau
            add_diff=torch.stack([(l - r).abs().amax(-1) for l, r in identities]).numpy(force=True),
            add_scale=torch.stack([r.abs().amax(-1) for _, r in identities]).numpy(force=True),
            lens_vs_model=np.array([float((formula - final[-1]).abs().max()), float(formula.abs().max())], np.float32),
        )
        return out


def _pickle_by_value() -> None:
    """The server (NDIF, or nnsight's local stand-in for it) runs the trace's code without resid_widgets
    installed: send our readout functions by value."""
    import cloudpickle

    import resid_widgets.analyses.lens as lens
    import resid_widgets.session.backends.nnsight_backend as me

    for module in (lens, me):
        cloudpickle.register_pickle_by_value(module)


__all__ = ["NNsightModel", "adapter_for"]
