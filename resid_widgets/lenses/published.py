"""Lenses published by others, loaded by path (or by hub name where the hub is reachable).

Two formats besides our own ``.safetensors`` (``Lens.save``):

* the **tuned-lens** package's (Belrose et al. 2023; ``TunedLens.save`` / ``from_model_and_pretrained``): a
  directory with ``config.json`` (``base_model_name_or_path``, ``d_model``, ``num_hidden_layers``, ``bias``,
  ``lens_type`` = "linear_tuned_lens", ``base_model_revision``, ``unembed_hash``) and ``params.pt``, the
  ``state_dict`` of its ``layer_translators`` (``"{i}.weight"`` [d, d] and ``"{i}.bias"`` [d] for i = 0..L-1).
  Hidden state i (i = 0: the embeddings) is read as ``final_norm(h + W_i h + b_i) @ W_U``: our row i, with
  ``M_i = I + W_i`` and ``c_i = b_i``; row L is the identity. Published under ``lens/<model name>/`` of the
  Hugging Face *space* ``AlignmentResearch/tuned-lens``.
* **TransformerLens 4.3**'s ``JacobianLens`` artifact (a ``.pt`` file: ``J`` = {layer: [d, d]}, ``n_prompts``,
  ``source_layers``, ``d_model``, optional ``metadata``; or a reference fit checkpoint with ``jacobian_sum``),
  also in a directory as ``lens.pt``; its layer l (the output of block l) is our row l + 1. Published for
  dozens of models; ``JacobianLens.from_pretrained`` knows their hub names.

Everything is checked against the model before the tensors are read: width, layer count, the file's size
against what that width and depth allow, every tensor's shape exactly (no broadcasting), and the library
version recorded with a TransformerLens artifact (newer major version than the one installed: refused).
``.pt`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is refused.

LayerNorm models (GPT-2, Pythia): the session's rows are compatibility-mode rows, each minus its mean,
while the tuned-lens package applies its translators to the raw hidden states. After the final LayerNorm
the two readouts differ by ``mu * P W_i 1`` (mu the raw row's mean, P the centring projector), which is
zero only when ``W_i 1`` is a multiple of 1. ``info["exact"]`` says so; RMSNorm models read exactly.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from resid_widgets.lenses import files
from resid_widgets.lenses.base import Lens, is_layernorm, model_of

TUNED_LENS_HUB = ("AlignmentResearch/tuned-lens", "space")
TUNED_LENS_TYPES = ("linear_tuned_lens",)
_CONFIG_MAX_BYTES = 1 << 20
_PT_SLACK = 1 << 20  # a .pt file's pickle and zip records, beyond its tensors' bytes
#: what is looked up on the hub when no such path exists: "gpt2", "EleutherAI/pythia-160m"
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def load_lens_source(source: str | os.PathLike, session: Any, *, kind: str | None = None) -> Lens:
    """A lens for ``session``'s model from a path (our file, a tuned-lens directory, a TransformerLens ``.pt``
    or a directory holding ``lens.pt``) or, for a name that is not a path, from the Hugging Face hub."""
    if kind not in (None, "jacobian", "tuned"):
        raise ValueError(f"kind must be 'jacobian', 'tuned' or None (from the file), not {kind!r}")
    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file() and (path / "params.pt").is_file():
            _want(kind, "tuned", path, "a tuned-lens directory")
            return load_tuned_lens_dir(path, session)
        if (path / "lens.pt").is_file():
            _want(kind, "jacobian", path, "a TransformerLens Jacobian-lens directory")
            return load_transformer_lens_pt(path / "lens.pt", session)
        raise ValueError(f"{path} is a directory but holds neither config.json + params.pt (a tuned lens) nor lens.pt "
                         "(a TransformerLens Jacobian lens)")
    if path.is_file():
        if path.suffix == ".pt":
            _want(kind, "jacobian", path, "a TransformerLens Jacobian-lens artifact (.pt)")
            return load_transformer_lens_pt(path, session)
        from resid_widgets.lenses.jacobian import JacobianLens
        from resid_widgets.lenses.tuned import TunedLens

        cls = {None: Lens, "jacobian": JacobianLens, "tuned": TunedLens}[kind]
        return cls.load(path, session_or_model=session)
    name = os.fspath(source)
    if not _HUB_NAME.fullmatch(name) or path.suffix in (".pt", ".safetensors", ".json"):
        raise FileNotFoundError(f"no lens file or directory at {path}")
    return _from_hub(name, session, kind)


def load_tuned_lens_dir(path: Path, session: Any) -> Lens:
    """The tuned-lens package's ``config.json`` + ``params.pt`` (see the module docstring)."""
    from resid_widgets.lenses.tuned import TunedLens

    L, d = files.model_shape(session)
    files.check_file_size(path / "config.json", _CONFIG_MAX_BYTES, "tuned-lens config.json")
    try:
        cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path / 'config.json'} is not JSON: {files._short(exc)}") from exc
    if not isinstance(cfg, dict):
        raise ValueError(f"{path / 'config.json'} is not a JSON object")
    lens_type = cfg.get("lens_type", "linear_tuned_lens")
    if lens_type not in TUNED_LENS_TYPES:
        raise ValueError(f"{path}: lens_type {lens_type!r} is not supported (only {', '.join(TUNED_LENS_TYPES)})")
    for key in ("d_model", "num_hidden_layers"):
        if isinstance(cfg.get(key), bool) or not isinstance(cfg.get(key), int):
            raise ValueError(f"{path / 'config.json'}: {key} is {cfg.get(key)!r}, not an integer")
    bias = cfg.get("bias", True)
    if not isinstance(bias, bool):
        raise ValueError(f"{path / 'config.json'}: bias is {bias!r}, not true/false")
    made_for = cfg.get("base_model_name_or_path", "another model")
    if (cfg["num_hidden_layers"], cfg["d_model"]) != (L, d):
        raise ValueError(f"this tuned lens was made for {made_for!r} ({cfg['num_hidden_layers']} layers, d_model "
                         f"{cfg['d_model']}); the model has {L} layers and d_model {d}")
    files.check_file_size(path / "params.pt", L * (d * d + d) * 8 + _PT_SLACK, "tuned lens")
    state = _torch_load(path / "params.pt")
    want = {f"{i}.weight": (d, d) for i in range(L)} | ({f"{i}.bias": (d,) for i in range(L)} if bias else {})
    _check_tensors(state, want, path / "params.pt")
    eye = torch.eye(d)
    matrices = {i: eye + state[f"{i}.weight"].float() for i in range(L)}
    offsets = {i: state[f"{i}.bias"].float() for i in range(L)} if bias else {}
    exact = not is_layernorm(model_of(session))
    info = {"source": "tuned-lens", "path": str(path), "model_name": made_for, "exact": exact,
            **{k: v for k, v in cfg.items() if k in ("base_model_revision", "unembed_hash", "lens_type")}}
    if not exact:
        warnings.warn(
            f"{path}: the tuned-lens package applies these translators to raw hidden states; on this LayerNorm model "
            "the session's rows are centred, so the readout differs from the package's by mu * P W 1 "
            "(lens.info['exact'] is False)", stacklevel=3)
    return TunedLens(L + 1, d, matrices=matrices, offsets=offsets, centre_input=False, info=info)


def load_transformer_lens_pt(path: Path, session: Any) -> Lens:
    """A TransformerLens / reference ``JacobianLens`` artifact or fit checkpoint, checked before it is built."""
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    from resid_widgets.lenses.jacobian import JacobianLens

    L, d = files.model_shape(session)
    files.check_file_size(path, max(L - 1, 1) * d * d * 8 + _PT_SLACK, "Jacobian-lens artifact")
    payload = _torch_load(path)
    key = "J" if "J" in payload else "jacobian_sum" if "jacobian_sum" in payload else None
    if key is None:
        raise ValueError(f"{path} is not a Jacobian-lens artifact: it has neither 'J' nor 'jacobian_sum' "
                         f"(keys: {sorted(map(str, payload))[:8]})")
    mats = payload[key]
    if not isinstance(mats, dict) or not mats:
        raise ValueError(f"{path}: {key!r} is not a non-empty dict of layer -> [d_model, d_model] matrices")
    layers = [_layer(k, path) for k in mats]
    bad = [l for l in layers if not 0 <= l < L - 1]
    if bad:
        raise ValueError(f"{path}: source layers {bad} are outside 0..{L - 2} for this {L}-layer model; "
                         "this lens belongs to a different model")
    _check_tensors({str(k): v for k, v in mats.items()}, {str(k): (d, d) for k in mats}, path)
    if key == "J" and (isinstance(payload.get("d_model"), bool) or payload.get("d_model") != d):
        raise ValueError(f"{path}: d_model is {payload.get('d_model')!r}, the model's is {d}")
    meta = payload.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: metadata is not a dict")
    _check_recorded_version(meta.get("transformer_lens_version"), path)
    target = meta.get("target_layer", payload.get("target_layer", L - 1))
    if target != L - 1:
        raise ValueError(f"{path}: the lens targets layer {target!r}, not the model's final layer {L - 1}")
    made_for, ours = meta.get("model_name"), getattr(model_of(session).cfg, "model_name", None)
    if isinstance(made_for, str) and isinstance(ours, str) and made_for and ours and made_for != ours:
        raise ValueError(f"{path}: the lens was fitted for model {made_for!r}, but the model is {ours!r}")
    try:
        if key == "J":
            tl = TLJacobianLens({_layer(k, path): v for k, v in mats.items()}, n_prompts=int(payload.get("n_prompts", 0)),
                                d_model=d, metadata=meta)
        else:
            tl = TLJacobianLens._from_checkpoint_payload(str(path), payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {files._short(exc)}") from exc
    lens = JacobianLens.from_transformer_lens(tl, session)
    lens.info["path"] = str(path)
    return lens.check_model(session)


# ---- helpers --------------------------------------------------------------------------------------
def _want(kind: str | None, found: str, path: Path, what: str) -> None:
    if kind is not None and kind != found:
        raise ValueError(f"{path} is {what}, which holds a {found} lens, not a {kind} lens")


def _torch_load(path: Path) -> dict:
    """``torch.load`` with ``weights_only=True`` (no code runs), memory-mapped; any failure is a ValueError."""
    import pickle
    import zipfile

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError,
            AttributeError, TypeError, KeyError, IndexError, ImportError) as exc:
        refused = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        why = "it holds objects other than tensors (refused: loading them could run code)" if refused else files._short(exc)
        raise ValueError(f"{path} is not a readable PyTorch tensor file: {why}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def _check_tensors(state: dict, want: dict[str, tuple[int, ...]], path: Path) -> None:
    extra = sorted(map(str, set(state) - set(want)))
    missing = sorted(set(want) - set(state))
    if extra or missing:
        raise ValueError(f"{path}: unexpected tensors {extra[:5]} / missing {missing[:5]} for this model")
    for name, shape in want.items():
        t = state[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"{path}: {name!r} is not a floating-point tensor")
        if tuple(t.shape) != shape:
            raise ValueError(f"{path}: {name!r} has shape {list(t.shape)}, expected {list(shape)} (no broadcasting)")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{path}: {name!r} has non-finite values")


def _layer(key: Any, path: Path) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)) or not str(key).lstrip("-").isdigit():
        raise ValueError(f"{path}: layer key {key!r} is not an integer")
    return int(key)


def _check_recorded_version(recorded: Any, path: Path) -> None:
    """Refuse an artifact written by a newer major TransformerLens than the one installed."""
    if recorded is None:
        return
    from importlib.metadata import version

    from packaging.version import InvalidVersion, Version

    installed = Version(version("transformer-lens"))
    try:
        made = Version(str(recorded))
    except InvalidVersion as exc:
        raise ValueError(f"{path}: recorded transformer_lens_version {recorded!r} is not a version") from exc
    if made.major > installed.major:
        raise ValueError(f"{path} was written by TransformerLens {made}, newer than the installed {installed}; "
                         "upgrade transformer-lens to read it")


def _from_hub(name: str, session: Any, kind: str | None) -> Lens:
    """Download a published lens by name: ``kind="tuned"`` from the tuned-lens space (``lens/<name>``),
    ``kind="jacobian"`` through TransformerLens's registry of published Jacobian lenses."""
    if kind is None:
        raise ValueError(f"no lens file or directory at {name!r}; to download a published lens by name, "
                         "say which: kind='tuned' (tuned-lens) or kind='jacobian' (TransformerLens)")
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if offline:
        raise ValueError(f"cannot download the {kind} lens {name!r}: the Hugging Face hub is off (HF_HUB_OFFLINE is set); "
                         "download the artifact elsewhere and pass its path")
    try:
        from huggingface_hub import hf_hub_download

        if kind == "tuned":
            repo, repo_type = TUNED_LENS_HUB
            got = [hf_hub_download(repo, f, repo_type=repo_type, subfolder=f"lens/{name}") for f in ("config.json", "params.pt")]
            return load_tuned_lens_dir(Path(got[0]).parent, session)
        from transformer_lens.tools.analysis import jacobian_lens as tl_jl

        resolved = tl_jl._resolve_registry_entry(name)
        if resolved is None:
            raise ValueError(f"TransformerLens knows no published Jacobian lens called {name!r}")
        repo, filename = resolved
        return load_transformer_lens_pt(Path(hf_hub_download(repo, filename, revision=tl_jl._registry_revision())), session)
    except ValueError:
        raise
    except Exception as exc:  # network, missing entry, hub errors
        raise ValueError(f"cannot download the {kind} lens {name!r} from the Hugging Face hub: {files._short(exc)}") from exc
