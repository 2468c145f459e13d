"""Where a ``Session``'s model runs: the backend interface.

A backend is a *model-like* object: it offers what ``Session`` reads from a model (see
``resid_widgets.session.loading``): ``run_with_cache(ids, names_filter=...) -> (logits, cache)`` with the
classic hook names, ``W_U`` [d_model, d_vocab], ``b_U``, ``ln_final``, ``cfg`` (``n_layers``, ``n_ctx``),
``to_tokens`` and ``tokenizer``. ``Session`` delegates the forward pass and the readout weights to it and
does not know where the model is; the analyses, payload and widgets do not change.

===============  =============================================  ===========================================
backend          what runs the forward pass                     readout (final norm, W_U, b_U)
===============  =============================================  ===========================================
``local``        a compatibility-mode ``TransformerBridge``      the bridge's folded, centred W_U / b_U
                 (or a ``HookedTransformer``): today's path
``device_map``   a raw ``TransformerBridge`` booted with an      the checkpoint's own norm and lm_head,
                 accelerate device map (parts on other devices   folded and centred here
                 or on disk); ``CapturedModel``                  (``readout.fold_readout``)
``driver``       a ``RemoteBridge`` and its ``Driver`` (vLLM,    the same, from ``weights=`` (a checkpoint
                 or any engine capturing the canonical hooks);   directory or state dict) or the driver's
                 ``CapturedModel``                               ``state_dict()``
===============  =============================================  ===========================================

``select(model, device=..., **options)`` picks one: a ``RemoteBridge`` -> driver; a name or directory
with ``device_map`` / ``max_memory`` / ``offload_folder`` -> device map; anything else -> local.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable

import torch

from resid_widgets.session.backends.captured import CapturedModel, RemoteError

#: what a backend that runs elsewhere reports while an analysis waits on it (ResidWidget's ``stage`` trait)
REMOTE_STAGES = ("queued", "running", "reading out")

#: the ``Session(...)`` keywords that choose or configure a backend
OPTIONS = ("device_map", "max_memory", "offload_folder", "n_devices", "dtype", "weights", "remote")


@contextlib.contextmanager
def stages(model: Any, report: Callable[[str], None]):
    """While the block runs, a backend that runs elsewhere tells ``report`` its stages ("queued" on NDIF,
    "running", "reading out"); a local model has none."""
    if not hasattr(model, "on_stage"):
        yield
        return
    previous, model.on_stage = model.on_stage, report
    try:
        yield
    finally:
        model.on_stage = previous


def is_nnsight_model(model: Any) -> bool:
    return type(model).__module__.split(".")[0] == "nnsight"


def is_remote_bridge(model: Any) -> bool:
    try:
        from transformer_lens.model_bridge.remote_bridge import RemoteBridge
    except ImportError:  # TransformerLens <= 3
        return False
    return isinstance(model, RemoteBridge)


def wants_device_map(options: dict[str, Any]) -> bool:
    return any(options.get(k) is not None for k in ("device_map", "max_memory", "offload_folder", "n_devices"))


def check_options(options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(f"Session got unexpected keyword arguments {unknown}; backend options are {', '.join(OPTIONS)}")
    dtype = options.get("dtype")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        if not (isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype)):
            raise TypeError(f"dtype must be a torch dtype such as torch.bfloat16 (or its name), got {dtype!r}")


def resolve_dtype(dtype: Any) -> torch.dtype:
    if dtype is None:
        return torch.float32
    return dtype if isinstance(dtype, torch.dtype) else getattr(torch, dtype)


def boot_device_map(name: str, *, device_map=None, max_memory=None, offload_folder=None, n_devices=None, dtype=None) -> CapturedModel:
    """A raw ``TransformerBridge`` placed by accelerate (``device_map="auto"`` when only ``max_memory`` /
    ``offload_folder`` are given), read through its canonical hooks."""
    from transformer_lens.model_bridge import TransformerBridge

    from resid_widgets.session.backends.readout import hf_paths, tensors_from_modules
    from resid_widgets.session.loading import _quiet_transformers

    if offload_folder is not None:
        os.makedirs(offload_folder, exist_ok=True)
    kwargs = dict(device_map=device_map or "auto", max_memory=max_memory, offload_folder=offload_folder, dtype=resolve_dtype(dtype))
    if n_devices is not None:
        kwargs["n_devices"] = n_devices
    with _quiet_transformers():
        bridge = TransformerBridge.boot_transformers(name, **kwargs)
    bridge.eval()
    norm_path, head_path, _ = hf_paths(bridge.adapter)
    hf = bridge.original_model
    tensors = tensors_from_modules(hf.get_submodule(norm_path), hf.get_submodule(head_path))
    device = _execution_device(hf.get_submodule(head_path))
    tensors = {k: None if v is None else v.to(device) for k, v in tensors.items()}
    return CapturedModel(bridge, tensors, kind="device_map", name=name, dtype=torch.float32)


def from_remote_bridge(bridge: Any, *, weights: Any = None) -> CapturedModel:
    """A ``RemoteBridge``; the readout's tensors from ``weights`` (a Hugging Face directory or a state dict)
    or, when the driver serves it, the driver's ``state_dict()``."""
    from resid_widgets.session.backends.readout import hf_paths, tensors_from_checkpoint, tensors_from_state

    paths = hf_paths(bridge.adapter)
    driver = bridge._driver
    if weights is None and _supports(driver, "state_dict") and callable(getattr(driver, "state_dict", None)):
        weights = driver.state_dict()
    if weights is None:
        raise ValueError(
            "the RemoteBridge's driver does not serve its weights (supports('state_dict') is False): pass the checkpoint "
            "directory for the lens readout, Session(bridge, weights='/path/to/model') (only the final norm and the "
            "unembedding are read)"
        )
    pos = getattr(bridge.adapter.component_mapping.get("pos_embed"), "name", None)  # GPT-2's learned positions
    if isinstance(weights, (str, os.PathLike)):
        tensors = tensors_from_checkpoint(weights, *paths, pos_path=pos)
    else:
        tensors = tensors_from_state(weights, *paths, pos_path=pos)
    name = getattr(bridge.cfg, "model_name", None) or getattr(driver, "architecture", "remote model")
    return CapturedModel(bridge, tensors, kind="driver", name=f"{name} (driver)")


def _supports(driver: Any, feature: str) -> bool:
    try:
        return bool(driver.supports(feature))
    except Exception:
        return False


def _execution_device(module: Any) -> torch.device:
    module = getattr(module, "_original_component", module)
    hook = getattr(module, "_hf_hook", None)
    dev = getattr(hook, "execution_device", None)
    if dev is not None:
        return torch.device(dev if not isinstance(dev, int) else f"cuda:{dev}")
    p = next(module.parameters(), None)
    return p.device if p is not None and p.device.type != "meta" else torch.device("cpu")


__all__ = ["CapturedModel", "OPTIONS", "REMOTE_STAGES", "RemoteError", "boot_device_map", "check_options", "from_remote_bridge", "is_nnsight_model",
           "is_remote_bridge", "stages", "wants_device_map"]
