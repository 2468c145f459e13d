"""What each backend can compute, and a clear error naming the backend for what it cannot.

* ``local``: everything.
* ``device_map``, ``driver``: every heatmap metric and the additivity check, batches, loaded Jacobian /
  tuned lenses, tuned-lens training. Refused: interventions, attribution, Jacobian-lens fitting,
  generation.
* ``driver (hook_out only)``: what needs only the residual rows (lens top-k, ranks, probabilities, logit
  differences, KL, entropy, projection %, residual norms, and the above). Also unavailable: the metrics
  whose ``needs`` is ``sublayers`` (attention-out / MLP-out norms) and the additivity check.
* ``nnsight``: the logit lens and every metric, read out inside the trace. Refused: as a driver, and
  loaded lenses, batches and tuned-lens training (the rows never leave the trace).

A backend that lacks something says so in ``model.lacks`` ({need: reason}, the needs of
``protocol.json`` metrics); ``Session.info()`` and every ``Analysis.info`` carry it as ``lacks``, the payload
header sends it, and the widget greys those metrics with the reason.

The hook_out-only capture (vLLM's stock overlay: ``embed.hook_out``, ``blocks.{l}.hook_out``,
``ln_final.hook_normalized``; no ``blocks.{l}.hook_in``) reads its rows as::

    row 0     = blocks.0.hook_in  when the driver serves it, else  embed.hook_out (+ W_pos[:T] from the
                checkpoint for models with a learned positional embedding: GPT-2)
    row l + 1 = blocks.l.hook_out

``ln_final.hook_normalized`` is never requested: the final norm is applied from the checkpoint's own
weights (the readout reads W_U from there anyway), so a driver that cannot give it loses nothing and
each forward pass moves (1 + L)·T·d_model numbers; weights without the final norm's weight are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from resid_widgets import hooks

#: the ``needs`` of protocol.json metrics that a backend may lack
SUBLAYERS = "sublayers"

#: what a feature needs that a captured / traced backend does not offer
FEATURES: dict[str, str] = {
    "interventions": "interventions write into the forward pass (a RemoteBridge's hooks are read-only; a device-mapped "
                     "or nnsight model is read through captures here)",
    "attribution": "attribution reads every head's and neuron's output and the model's weights",
    "jacobian_fit": "fitting a Jacobian lens needs a backward pass through the model",
    "tuned_fit": "training a tuned lens reads the residual rows, which never leave an nnsight trace here",
    "generation": "generation runs the model token by token",
}


#: features some non-local backends do offer (a tuned lens trains on the rows a driver or device map returns)
OFFERED_BY: dict[str, tuple[str, ...]] = {"tuned_fit": ("device_map", "driver", "driver (hook_out only)")}


class BackendUnavailable(NotImplementedError):
    """What the session's backend cannot compute (the message names the backend and why)."""


def backend_label(model: Any) -> str:
    """``local``, ``device_map``, ``driver``, ``driver (hook_out only)`` or ``nnsight``."""
    if getattr(model, "reads_out_in_trace", False):
        return "nnsight"
    kind = getattr(model, "kind", None)
    if kind not in ("device_map", "driver"):
        return "local"
    return f"{kind} (hook_out only)" if SUBLAYERS in getattr(model, "lacks", {}) else kind


def lacks(model: Any) -> dict[str, str]:
    """{need: reason} of what the backend cannot give ({} for a local model)."""
    return dict(getattr(model, "lacks", None) or {})


def require(session: Any, feature: str) -> None:
    """Raise ``BackendUnavailable`` naming the backend when ``session``'s backend cannot do ``feature``."""
    model = getattr(session, "model", session)
    label = backend_label(model)
    if label == "local" or label in OFFERED_BY.get(feature, ()):
        return
    name = getattr(session, "name", None) or getattr(getattr(model, "cfg", None), "model_name", "the model")
    raise BackendUnavailable(
        f"{feature.replace('_', ' ')} is not available on the {label} backend ({name}): {FEATURES[feature]}; "
        "load the model locally (Session(path)) for it"
    )


def refused(session: Any, features: tuple[str, ...] = ("interventions", "attribution")) -> dict[str, str]:
    """{feature: the error ``require`` would raise} for what ``session``'s backend refuses ({} for a local model):
    the widget's header sends it so the Steer toggle and the Writers panel say so before anyone asks."""
    out = {}
    for feature in features:
        try:
            require(session, feature)
        except BackendUnavailable as exc:
            out[feature] = str(exc)
    return out


# ---- hook_out-only capture ----------------------------------------------------------------------
def capture_plan(available: frozenset[str], n_layers: int, writers: tuple[str, str], *, kind: str,
                 embed_is_row0: bool) -> tuple[list[str], dict[str, str]]:
    """(hook names to capture, what the backend lacks). Every sublayer output served: the full capture;
    only the residual stream (``blocks.{l}.hook_out`` and a row 0): the rows-only capture.
    ``embed_is_row0``: ``embed.hook_out`` gives row 0 (no learned positional embedding, or its weight is held)."""
    L = n_layers
    outs = [f"blocks.{l}.hook_out" for l in range(L)]
    full = ["blocks.0.hook_in"] + [f"blocks.{l}.{p}" for l in range(L) for p in (f"{writers[0]}.hook_out", f"{writers[1]}.hook_out", "hook_out")]
    if all(n in available for n in full):
        return full, {}
    first = "blocks.0.hook_in" if "blocks.0.hook_in" in available else "embed.hook_out"
    if first == "embed.hook_out" and not embed_is_row0:
        raise ValueError(f"the {kind} engine captures neither blocks.0.hook_in nor the positional embedding, and the weights "
                         "hold no positional embedding: row 0 (token + position embedding) cannot be formed")
    missing = [n for n in [first] + outs if n not in available]
    if missing:
        raise ValueError(
            f"the {kind} engine does not capture {missing[:3]}{'...' if len(missing) > 3 else ''}; the residual rows need "
            "blocks.{l}.hook_out for every layer and blocks.0.hook_in or embed.hook_out (the attention / MLP norms also "
            "blocks.{l}.attn.hook_out and blocks.{l}.mlp.hook_out). Add them to the driver's supported_hook_points"
        )
    subs = f"blocks.{{l}}.{writers[0]}.hook_out, blocks.{{l}}.{writers[1]}.hook_out"
    reason = (f"the {kind} (hook_out only) backend captures only the residual stream after each block (blocks.{{l}}.hook_out), "
              f"not the sublayer outputs ({subs}): attention / MLP output norms and the additivity check need them")
    return [first] + outs, {SUBLAYERS: reason}


def row_zero(raw: dict, pos_weight: Any) -> Any:
    """Row 0 [B, T, d] from a rows-only capture: ``blocks.0.hook_in``, else ``embed.hook_out`` plus the
    learned positional embedding's first T rows (``pos_weight`` [n_ctx, d], None for rotary models)."""
    if "blocks.0.hook_in" in raw:
        return raw["blocks.0.hook_in"]
    x = raw["embed.hook_out"]
    if pos_weight is None:
        return x
    return x + pos_weight[: x.shape[-2]].to(x.device, x.dtype)


def rows_only_cache(get, n_layers: int, first: Any) -> dict:
    """The classic hooks a rows-only capture gives: resid_pre(0), resid_post(l) (= resid_pre(l + 1))."""
    out = {hooks.resid_pre(0): first}
    for l in range(n_layers):
        out[hooks.resid_post(l)] = get(f"blocks.{l}.hook_out")
        if l + 1 < n_layers:
            out[hooks.resid_pre(l + 1)] = out[hooks.resid_post(l)]
    return out


def needed_hooks(n_layers: int, *, parallel: bool, lacking: dict[str, str]) -> list[str]:
    """The hooks the analyses read, in forward order (only the residual rows when sublayers are lacking)."""
    if SUBLAYERS in lacking:
        return hooks.residual_rows(n_layers) + [hooks.FINAL_NORM]
    return hooks.needed_hooks(n_layers, parallel=parallel) + [hooks.FINAL_NORM]


def sublayer_parts(cache: dict, n_layers: int, n_tokens: int, *, parallel: bool, lacking: dict[str, str]):
    """(attn_norm [L, T], mlp_norm [L, T], additivity keys, diff [K, L, T], scale [K, L, T]); NaN norms and
    no identities when the backend lacks the sublayer outputs."""
    from resid_widgets.analyses.norms import additivity_parts, l2_norms

    L = n_layers
    if SUBLAYERS in lacking:
        nan = np.full((L, n_tokens), np.nan, np.float32)
        empty = np.zeros((0, L, n_tokens), np.float32)
        return nan, nan.copy(), (), empty, empty
    import torch

    keys, diff, scale = additivity_parts(cache, L, parallel=parallel)
    attn = l2_norms(torch.stack([cache[hooks.attn_out(l)] for l in range(L)]))
    mlp = l2_norms(torch.stack([cache[hooks.mlp_out(l)] for l in range(L)]))
    return attn, mlp, keys, diff, scale


__all__ = ["BackendUnavailable", "FEATURES", "SUBLAYERS", "backend_label", "capture_plan", "lacks", "needed_hooks", "require", "row_zero", "rows_only_cache", "sublayer_parts"]
