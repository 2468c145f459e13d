"""A TransformerLens 4.3 ``Driver`` written against the protocol (``driver_protocol.Driver``), serving
``capture`` with plain torch hooks on a local Hugging Face model: what a remote engine's driver does,
without the engine. ``RemoteBridge(driver.adapter, driver.tokenizer, driver)`` wraps it.

    driver = HookDriver("/path/to/hf_dir")
    bridge = RemoteBridge(driver.adapter, driver.tokenizer, driver)
    Session(bridge)

Canonical hook names served (what a vLLM overlay captures, plus the attention / MLP outputs):
``embed.hook_out``, ``blocks.{l}.hook_in``, ``blocks.{l}.hook_out``, ``blocks.{l}.attn.hook_out``,
``blocks.{l}.mlp.hook_out`` (and every other block submodule's output: the post-norms of sandwich-norm
blocks). ``bytes_sent`` counts every tensor ``forward`` returns.

``HookDriver(path, hooks="hook_out")`` serves what vLLM's stock decoder-only overlay captures without
the sublayer outputs: ``embed.hook_out``, ``blocks.{l}.hook_out`` and ``ln_final.hook_normalized``
(the final norm's output before its weight, as TransformerLens names it; ``ln_final=False``: a driver
that cannot give it). No ``blocks.{l}.hook_in``: vLLM never materialises a block's input
(``extra_hooks=("blocks.0.hook_in",)`` adds it: a driver that does).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch


class HookDriver:
    provides_sequence_logits = True
    non_fireable_hook_points = frozenset()
    _supported_features = frozenset({"state_dict"})

    def __init__(self, path, *, fail: Callable[[int], Exception | None] | None = None, serve_weights: bool = True, dtype=torch.float32,
                 hooks: str = "all", ln_final: bool = True, extra_hooks: tuple[str, ...] = ()):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory
        from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_config_from_hf, configure_tokenizer
        from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager").eval()
        self.hf_config = self.model.config
        self.architecture = determine_architecture_from_hf_config(self.hf_config)
        self.bridge_config = build_bridge_config_from_hf(self.hf_config, self.architecture, str(path), dtype)
        self.adapter = ArchitectureAdapterFactory.select_architecture_adapter(self.bridge_config)
        self.tokenizer = configure_tokenizer(AutoTokenizer.from_pretrained(str(path)), self.adapter.cfg)
        mapping = self.adapter.component_mapping
        blocks = mapping["blocks"]
        self._blocks = self.model.get_submodule(blocks.name)
        self._sub = {k: v.name for k, v in blocks.submodules.items()}
        self._embed = self.model.get_submodule(mapping["embed"].name)
        self._final_norm = self.model.get_submodule(mapping["ln_final"].name)
        L = len(self._blocks)
        names = {"embed.hook_out"}
        if hooks == "hook_out":  # vLLM's stock overlay: the residual stream after each block, nothing inside it
            names |= {f"blocks.{l}.hook_out" for l in range(L)} | ({"ln_final.hook_normalized"} if ln_final else set())
        elif hooks == "all":
            for l in range(L):
                names |= {f"blocks.{l}.hook_in", f"blocks.{l}.hook_out"} | {f"blocks.{l}.{sub}.hook_out" for sub in self._sub}
        else:
            raise ValueError(f"hooks must be 'all' or 'hook_out', got {hooks!r}")
        self.supported_hook_points = frozenset(names | set(extra_hooks))
        self.serve_weights = serve_weights
        self.fail = fail  # called with the call number; an exception it returns is raised (a lost connection)
        self.calls = 0
        self.bytes_sent = 0

    # ---- the protocol ---------------------------------------------------------------------------
    def forward(self, input_ids=None, *, capture: tuple[str, ...] = (), intervene: Mapping[str, Any] | None = None,
                max_new_tokens: int = 1, return_logits: bool = True, **kwargs: Any):
        from transformer_lens.model_bridge.driver_protocol import ForwardResult

        self.calls += 1
        if self.fail is not None:
            error = self.fail(self.calls)
            if error is not None:
                raise error
        if intervene:
            raise NotImplementedError("HookDriver serves capture only")
        if max_new_tokens != 1:
            raise NotImplementedError("HookDriver runs one forward pass")
        unknown = sorted(set(capture) - self.supported_hook_points)
        if unknown:
            raise ValueError(f"cannot capture {unknown[:3]}")
        captured: dict[str, torch.Tensor] = {}
        handles = [self._hook(name, captured) for name in capture]
        try:
            with torch.inference_mode():
                out = self.model(torch.as_tensor(input_ids), use_cache=False)
        finally:
            for h in handles:
                h.remove()
        logits = out.logits if return_logits else None
        self.bytes_sent += sum(t.numel() * t.element_size() for t in captured.values())
        self.bytes_sent += 0 if logits is None else logits.numel() * logits.element_size()
        return ForwardResult(logits=logits, captured=captured, raw_output=out)

    def close(self) -> None:
        pass

    def supports(self, feature: str) -> bool:
        return feature == "state_dict" and self.serve_weights

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    # ---- hooks ----------------------------------------------------------------------------------
    def _hook(self, name: str, captured: dict):
        first = lambda x: x[0] if isinstance(x, tuple) else x  # noqa: E731
        store = lambda t: captured.__setitem__(name, t.detach().clone())  # noqa: E731
        if name == "embed.hook_out":
            return self._embed.register_forward_hook(lambda m, a, o: store(first(o)))
        if name == "ln_final.hook_normalized":  # the norm's output before its weight (and bias)
            return self._final_norm.register_forward_hook(lambda m, a, o: store(_normalized(m, a[0])))
        _, l, *rest = name.split(".")
        block = self._blocks[int(l)]
        if rest == ["hook_in"]:
            return block.register_forward_pre_hook(lambda m, a, kw: store(a[0] if a else kw["hidden_states"]), with_kwargs=True)
        if rest == ["hook_out"]:
            return block.register_forward_hook(lambda m, a, o: store(first(o)))
        module = block.get_submodule(self._sub[rest[0]])
        return module.register_forward_hook(lambda m, a, o: store(first(o)))


def _normalized(norm, x: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) for a LayerNorm, x / sqrt(mean(x^2) + eps) for an RMSNorm."""
    y = x.float()
    if isinstance(norm, torch.nn.LayerNorm):
        y = y - y.mean(-1, keepdim=True)
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon", 1e-6)
    return (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def remote_bridge(path, **kwargs):
    """``(RemoteBridge, driver)`` over a local HF directory."""
    from transformer_lens.model_bridge.driver_protocol import validate_driver
    from transformer_lens.model_bridge.remote_bridge import RemoteBridge

    driver = HookDriver(path, **kwargs)
    validate_driver(driver)
    return RemoteBridge(driver.adapter, driver.tokenizer, driver), driver
