"""Turning what the user passes (a name, a local directory, a loaded model) into a model object.

Models are used by what they provide, not by class: ``run_with_cache``, ``W_U`` ([d_model, d_vocab]),
``b_U``, ``ln_final`` and ``cfg`` (``n_layers``, ``n_ctx``). TransformerLens 4 ``TransformerBridge``
objects and TransformerLens <= 3 ``HookedTransformer`` objects both qualify.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: The small GPT-2 trained by scripts/train_demo_model.py and shipped inside the package.
DEMO_MODEL_DIR = Path(__file__).resolve().parent.parent / "demo_model"
DEMO_MODEL_NAME = "resid-widgets demo model"

REQUIRED_ATTRIBUTES = ("run_with_cache", "W_U", "ln_final", "cfg")


def is_model_like(obj: Any) -> bool:
    return all(hasattr(obj, attr) for attr in REQUIRED_ATTRIBUTES)


def load_model(model: Any = None, *, device: str | None = None, **options: Any) -> tuple[Any, str, bool]:
    """Return ``(model, display_name, is_demo)``.

    ``model`` is None (the embedded demo model), a hub name such as ``"gpt2"``, a local Hugging
    Face model directory, or an already-loaded TransformerLens model (returned as is). ``options``
    choose where it runs (``resid_widgets.session.backends``): ``device_map`` / ``max_memory`` /
    ``offload_folder`` / ``n_devices`` (accelerate), ``dtype``, ``weights`` (a ``RemoteBridge``'s or nnsight
    model's readout tensors), ``remote`` (nnsight: "local" or True for NDIF).
    """
    from resid_widgets.session import backends

    backends.check_options(options)
    elsewhere = _load_elsewhere(model, device=device, options=options)
    if elsewhere is not None:
        return elsewhere
    dtype = None if options.get("dtype") is None else backends.resolve_dtype(options["dtype"])
    if dtype is not None and not isinstance(model, (str, os.PathLike)) and model is not None:
        raise TypeError("dtype= applies to a model loaded by name or directory; convert a loaded model yourself")
    if model is None:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise FileNotFoundError(
                f"The embedded demo model is missing from {DEMO_MODEL_DIR}. Reinstall resid_widgets, "
                "or rebuild it with `python scripts/train_demo_model.py`, or pass a model name such as 'gpt2'."
            )
        loaded = _load_by_name(str(DEMO_MODEL_DIR), device=device, local=True, dtype=dtype)
        return loaded, f"{DEMO_MODEL_NAME} (4-layer GPT-2, offline)", True
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model)
        if not name.strip():
            raise ValueError("model name is empty; pass a name such as 'gpt2', a local directory, or None for the demo model")
        local = os.path.isdir(name)
        loaded = _load_by_name(os.path.abspath(name) if local else name, device=device, local=local, dtype=dtype)
        return loaded, name, False
    if is_model_like(model):
        cfg = model.cfg
        name = getattr(cfg, "model_name", None) or type(model).__name__
        return model, str(name), False
    missing = [a for a in REQUIRED_ATTRIBUTES if not hasattr(model, a)]
    raise TypeError(
        f"Cannot use a {type(model).__name__} as a model: it lacks {', '.join(missing)}. Pass a model name, a local "
        "Hugging Face directory, a TransformerLens TransformerBridge or HookedTransformer, or None for the demo model."
    )


def _load_elsewhere(model: Any, *, device: str | None, options: dict[str, Any]) -> tuple[Any, str, bool] | None:
    """A backend that runs the model elsewhere (``resid_widgets.session.backends``): an nnsight
    ``LanguageModel``, a ``RemoteBridge``, or a name / directory with a device map. None: the local path."""
    from resid_widgets.session import backends

    if backends.is_nnsight_model(model):
        from resid_widgets.session.backends.nnsight_backend import NNsightModel

        loaded = NNsightModel(model, remote=options.get("remote", "local"), weights=options.get("weights"))
        return loaded, loaded.cfg.model_name, False
    if options.get("remote") is not None:
        raise TypeError("remote= is for an nnsight LanguageModel")
    if backends.is_remote_bridge(model):
        loaded = backends.from_remote_bridge(model, weights=options.get("weights"))
        return loaded, loaded.cfg.model_name, False
    if options.get("weights") is not None:
        raise TypeError("weights= is for a RemoteBridge or an nnsight model (their readout's tensors); this model carries its own")
    if not backends.wants_device_map(options):
        return None
    if device is not None:
        raise ValueError("pass either device or device_map, not both")
    if not isinstance(model, (str, os.PathLike)) and model is not None:
        raise TypeError("device_map / max_memory / offload_folder need a model name or directory, not a loaded model")
    name = os.fspath(model) if model is not None else str(DEMO_MODEL_DIR)
    local = os.path.isdir(name)
    if local:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    keys = ("device_map", "max_memory", "offload_folder", "n_devices", "dtype")
    loaded = backends.boot_device_map(os.path.abspath(name) if local else name, **{k: options.get(k) for k in keys})
    return loaded, f"{name if model is not None else DEMO_MODEL_NAME} (device map)", model is None


def _load_by_name(name: str, *, device: str | None, local: bool, dtype: Any = None):
    if local:
        # A local directory needs no hub; say so before transformers looks anything up.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = device or _default_device()
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # TransformerLens <= 3
        return _load_hooked_transformer(name, device=device, local=local)
    with _quiet_transformers():
        bridge = TransformerBridge.boot_transformers(name, device=device, **({} if dtype is None else {"dtype": dtype}))
    # The classic hook names (blocks.N.hook_resid_post...) and weight processing: the final
    # LayerNorm's weights are folded into W_U / b_U and W_U is centred.
    bridge.enable_compatibility_mode(disable_warnings=True)
    bridge.eval()
    return bridge


class _quiet_transformers:
    """No "Loading weights" progress bar in the notebook output while booting (restored after)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self._was_enabled:
            self._logging.enable_progress_bar()


def _load_hooked_transformer(name: str, *, device: str, local: bool):
    from transformer_lens import HookedTransformer

    if local:
        raise NotImplementedError(
            "Loading a local model directory needs TransformerLens >= 4 (TransformerBridge). With TransformerLens "
            f"{_tl_version()}, load it yourself (HookedTransformer.from_pretrained(name, hf_model=...)) and pass the model."
        )
    model = HookedTransformer.from_pretrained(name, device=device)
    model.eval()
    return model


def _tl_version() -> str:
    try:
        from importlib.metadata import version

        return version("transformer-lens")
    except Exception:  # pragma: no cover
        return "unknown"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
