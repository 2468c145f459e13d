"""``Session``: one loaded model, reused by every analysis and widget.

A session keeps the model, what is computed once per model (the SVD of W_U, token strings) and the
locking. It tokenises, validates input, runs *one* forward pass per prompt (or batch) caching only
the hooks the analyses need, and hands the activations to the staged pipeline
(``resid_widgets.analyses.pipeline``). It keeps the previous prompt's run, so an edit runs the
forward pass only from the first changed token on (on the earlier pass's key/value cache) and reads
out only the changed positions (a causal model's activations before the edit are unchanged).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from resid_widgets import hooks
from resid_widgets.analyses.lens import DEFAULT_CHUNK_ELEMENTS, FinalReadout, softcap
from resid_widgets.analyses.pipeline import Activations, Cancelled, Context, Lens, Request, Update, drain, run_stages
from resid_widgets.analyses.projection import TokenSubspace, check_tau
from resid_widgets.analyses.result import Analysis
from resid_widgets.payload.protocol import TRAITS
from resid_widgets.session import fingerprint
from resid_widgets.session.guard import WeightsGuard, _view_key
from resid_widgets.session import backends
from resid_widgets.session.backends import capabilities
from resid_widgets.interventions.core import Intervention, as_intervention, installed, reusable_prefix
from resid_widgets.session.loading import load_model
from resid_widgets.session.prompts import MAX_PROMPT_CHARS, MAX_TARGETS, PromptLike, Prompts, target_list

Progress = Callable[[float, str], None]
#: the most predictions kept per cell (protocol.json ``traits.top_k.max``: the widget's own limit)
MAX_TOP_K: int = int(TRAITS["top_k"]["max"])


@dataclass
class _Last:
    """The previous prompt's run, which an edit of it reuses up to the first changed token."""

    ids: np.ndarray
    acts: Activations  # without logits
    analysis: Analysis
    readout_key: tuple | None  # set once every lens cell was read (a cancelled run reuses only its forward pass)
    params_key: tuple  # the model's parameters (storage, content fingerprint) when it ran
    kv: Any  # the Hugging Face key/value cache of its forward pass, or None
    lens_key: Any = None  # the lens's content fingerprint when its cells were read
    intervention: Intervention | None = None  # the hooks it ran under (prefix reuse is keyed on them)


class Session(WeightsGuard, Prompts):
    """A model plus everything computed once per model (SVD of W_U, token strings).

    ``model`` may be None (the embedded demo model), a hub name (``"gpt2"``), a local Hugging Face
    directory, a loaded ``TransformerBridge`` or ``HookedTransformer``. Thread-safe: analyses run one
    at a time.
    """

    def __init__(self, model: Any = None, *, device: str | None = None, **backend: Any):
        if isinstance(model, Session):
            raise TypeError("model is already a Session; use it directly")
        # backend options (device_map, max_memory, offload_folder, dtype, weights, remote): resid_widgets.session.backends
        self.model, self.name, self.is_demo = load_model(model, device=device, **backend)
        cfg = self.model.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.n_ctx: int = int(cfg.n_ctx)
        self.d_model: int = int(self.model.W_U.shape[0])
        self.d_vocab: int = int(self.model.W_U.shape[1])
        #: attention and MLP read the same residual (GPT-NeoX / Pythia): no resid_mid hook
        self.parallel: bool = hooks.is_parallel(self.model)
        #: what the backend cannot give ({need: reason}; e.g. a driver capturing only blocks.{l}.hook_out lacks "sublayers")
        self.lacks: dict[str, str] = capabilities.lacks(self.model)
        cap = float(getattr(cfg, "output_logits_soft_cap", 0.0) or 0.0)
        #: the model's output soft-cap c (logits = c * tanh(z / c)), or None
        self.softcap: float | None = cap if cap > 0 else None
        self._subspace: TokenSubspace | None = None
        self._strings: dict[int, str] = {}
        self._last: _Last | None = None
        self._lenses: dict[str, Lens] = {}  # "jacobian" / "tuned" -> the lens analyze(lens=kind) uses
        self._kv_enabled = True  # reuse the previous prompt's key/value cache for an edit
        self._kv_verified = False
        self._info: dict[str, Any] | None = None
        self._weights_key: tuple | None = None
        self._fp_now: dict[tuple, Any] | None = None  # storage digests, computed once per locked operation
        self._lens_fps: dict[str, Any] = {}  # kind -> the held lens's fingerprint when last keyed
        self._lens_epoch_n = 0
        self._fp_handoff: tuple[int, dict] | None = None  # (thread, digests) from _params_key for the next operation
        #: logits per lens block (block size in positions = this / (rows x vocab)); also the streaming grain
        self.chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
        self._lock = threading.RLock()

    # ---- model facts ----------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return getattr(self.model, "tokenizer", None)

    @property
    def device(self) -> torch.device:
        return self.model.W_U.device

    @property
    def subspace(self) -> TokenSubspace:
        """SVD of W_U, computed once per set of weights and reused for every tau."""
        with self._lock:
            self._check_weights()
            if self._subspace is None:
                self._subspace = TokenSubspace.from_unembed(self.model.W_U.detach().cpu())
            return self._subspace

    def _readout_weights(self) -> dict[str, torch.Tensor]:
        """Every tensor the lens readout, the SVD and the model facts depend on."""
        W_U, b_U = self._unembed()
        out = {"W_U": W_U}
        if b_U is not None:
            out["b_U"] = b_U
        for name, p in self.model.ln_final.named_parameters():
            out[f"ln_final.{name.removeprefix('_original_component.')}"] = p.detach()
        return out

    def _check_weights(self) -> None:
        """Forget what was computed from the readout weights when any of them changed in place (tensor
        version counters and storage), and refuse non-finite weights with a clear error."""
        weights = self._readout_weights()
        fp = fingerprint.digests(weights.values(), self._fp_now)
        if self._fp_now is not None:
            self._fp_now.update(fp)
        key = tuple((n, _view_key(t), fp[fingerprint.storage_key(t)]) for n, t in weights.items())
        if key == self._weights_key:
            return
        self._subspace, self._info, self._last = None, None, None
        self._weights_key = None
        for name, t in weights.items():
            finite = torch.isfinite(t)
            if not bool(finite.all()):
                where = ""
                if name == "W_U":
                    bad = torch.nonzero(~finite.all(0)).flatten()[:5].tolist()
                    where = f" (token ids {bad}{'...' if int((~finite.all(0)).sum()) > 5 else ''})"
                folded = " (in compatibility mode the final norm's weight is folded into W_U)" if name == "W_U" else ""
                raise ValueError(f"non-finite values (NaN or inf) in the model's {name}{where}{folded}; fix the weights")
        self._weights_key = key

    def _unembed(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        b_U = getattr(self.model, "b_U", None)
        return self.model.W_U.detach(), None if b_U is None else b_U.detach()

    def info(self) -> dict[str, Any]:
        """Model facts recorded with every analysis (computed once per set of weights: it scans W_U)."""
        with self._lock:
            self._check_weights()
            if self._info is None:
                self._info = self._model_facts()
            return dict(self._info)

    def _model_facts(self) -> dict[str, Any]:
        W_U, b_U = self._unembed()
        centred = bool(W_U.float().mean(-1).abs().max() <= 1e-5 * W_U.float().abs().max())
        return {
            "model_name": self.name,
            "is_demo": self.is_demo,
            "n_layers": self.n_layers,
            "n_ctx": self.n_ctx,
            "d_model": self.d_model,
            "d_vocab": self.d_vocab,
            "normalization": str(getattr(self.model.cfg, "normalization_type", None)),
            "unembed_centred": centred,
            "has_b_U": b_U is not None,
            "block": "parallel" if self.parallel else "sequential",
            "softcap": self.softcap,
            "backend": capabilities.backend_label(self.model),
            **({"lacks": dict(self.lacks)} if self.lacks else {}),
        }

    # ---- analysis -------------------------------------------------------------------------------
    def _needed_hooks(self) -> list[str]:
        """The hooks the analyses read, in the order the forward pass computes them."""
        return capabilities.needed_hooks(self.n_layers, parallel=self.parallel, lacking=self.lacks)

    def _run(self, batch_ids: torch.Tensor, past: Any = None, intervention: Intervention | None = None,
             offset: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One forward pass caching only the needed hooks; ``past`` is a Hugging Face KV cache that the
        pass extends (its positions are not recomputed); ``intervention``'s hooks run during the pass (the
        batch holds positions ``offset ..`` of the prompt) and are removed after it."""
        order = self._needed_hooks()
        needed = set(order)
        kwargs = {} if past is None else {"past_key_values": past}
        hooked = installed(self, intervention, offset + int(batch_ids.shape[1]), offset)
        with torch.inference_mode(), hooked, _kv_cache_kwarg(self.model, past is not None), warnings.catch_warnings():
            # transformers 5 renames GPT-2's past_key_values to cache; the bridge still reads the old name
            warnings.filterwarnings("ignore", message=".*past_key_values.* is deprecated", category=FutureWarning)
            logits, cache = self.model.run_with_cache(batch_ids.to(self.device), names_filter=lambda n: n in needed, **kwargs)
            if needed - cache.keys() and callable(getattr(self.model, "setup", None)) and hasattr(self.model, "mod_dict"):
                # TransformerLens <= 3: process_weights_() swaps the LayerNorm modules but leaves the hook
                # table pointing at the old ones until setup() runs again.
                self.model.setup()
                logits, cache = self.model.run_with_cache(batch_ids.to(self.device), names_filter=lambda n: n in needed)
        cache = {k: cache[k] for k in order if k in cache}  # forward order: the first non-finite hook is named
        missing = [k for k in order if k not in cache]
        if missing:
            raise RuntimeError(
                f"the model's cache lacks {missing[:3]}{'...' if len(missing) > 3 else ''}: TransformerBridge models need "
                "enable_compatibility_mode() (Session does this for models it loads by name); a HookedTransformer whose "
                "weights were processed after loading needs model.setup()"
            )
        # one reduction per batch of hooks; name the first non-finite hook only when there is one
        if not all(bool(torch.isfinite(torch.stack(group)).all()) for group in _groups(cache)):
            for name, t in cache.items():
                if not torch.isfinite(t).all():
                    raise ValueError(f"non-finite values (NaN or inf) in the activations at hook {name!r}")
        return logits, cache

    def _activations(self, ids: np.ndarray, cache: dict[str, torch.Tensor], logits: torch.Tensor) -> Activations:
        """One prompt's cache ([T, d] tensors) reduced to what the analyses read."""
        L = self.n_layers
        attn, mlp, keys, diff, scale = capabilities.sublayer_parts(cache, L, len(ids), parallel=self.parallel, lacking=self.lacks)
        return Activations(
            ids=np.asarray(ids, dtype=np.int64),
            resid=torch.stack([cache[h].float() for h in hooks.residual_rows(L)]),
            final_norm=cache[hooks.FINAL_NORM].float(),
            attn_norm=attn,
            mlp_norm=mlp,
            add_keys=keys,
            add_diff=diff,
            add_scale=scale,
            logits=logits.float(),
        )

    def _new_kv(self) -> Any:
        if not self._kv_enabled:
            return None
        try:
            from transformers import DynamicCache

            return DynamicCache(config=self.model.original_model.config)
        except Exception:  # not a Hugging Face model under the bridge (native or TL <= 3): no prefix reuse
            self._kv_enabled = False
            return None

    def _forward(self, ids: np.ndarray, last: "_Last | None", params_key: tuple,
                 intervention: Intervention | None = None) -> tuple[Activations, Any]:
        """The activations of ``ids``; with an earlier prompt sharing a prefix (``last``), only the new
        suffix runs, on the earlier run's key/value cache (up to the first position either run's
        intervention touches)."""
        n = 0
        if last is not None and last.params_key == params_key:
            n = min(_common_prefix(last.ids, ids), len(ids) - 1,
                    reusable_prefix(last.intervention, intervention, len(last.ids), len(ids)))
        if n > 0 and last.kv is not None:
            kv = last.kv
            kv.crop(n - kv.get_seq_length())  # keep the first n positions
            logits, cache = self._run_under(intervention, torch.as_tensor(ids[n:])[None], kv, n)
            acts = self._activations(ids[n:], {k: v[0] for k, v in cache.items()}, logits[0]).with_prefix(last.acts, n)
            if kv.get_seq_length() != len(ids) or not self._kv_checked(acts, intervention):
                self._kv_enabled = False  # the model does not extend the cache: never reuse it again
                return self._forward(ids, None, params_key, intervention)
            return acts, kv
        kv = self._new_kv()
        logits, cache = self._run_under(intervention, torch.as_tensor(ids)[None], kv)
        if kv is not None and (kv.get_seq_length() != len(ids) or not all(type(l).__name__ == "DynamicLayer" for l in kv.layers)):
            kv = None  # a cache the bridge did not fill, or sliding-window layers that cannot be cropped back
        acts = self._activations(ids, {k: v[0] for k, v in cache.items()}, logits[0])
        if n > 0:  # recomputed in full, but the first n positions are the previous prompt's: mark them reusable
            acts = replace(acts, logits=acts.logits[n:], start=n)
        return acts, kv

    def _run_under(self, intervention: Intervention | None, ids: torch.Tensor, past: Any = None, offset: int = 0):
        """``_run`` with the intervention's hooks (a plain run calls ``_run(ids, past)`` exactly as before)."""
        if intervention is None:
            return self._run(ids, past)
        return self._run(ids, past, intervention, offset)

    def _kv_checked(self, acts: Activations, intervention: Intervention | None = None) -> bool:
        """The first prefix reuse of a session is compared with a full forward pass (once)."""
        if self._kv_verified:
            return True
        _, cache = self._run_under(intervention, torch.as_tensor(acts.ids)[None])
        full = torch.stack([cache[h][0].float() for h in hooks.residual_rows(self.n_layers)])
        err = float((full - acts.resid).abs().max() / full.abs().max().clamp_min(1e-12))
        self._kv_verified = err <= 1e-4
        return self._kv_verified

    def _context(self, cancelled: Callable[[], bool] | None) -> Context:
        W_U, b_U = self._unembed()
        return Context(
            model_name=self.name,
            readout=FinalReadout(self.model.ln_final, W_U, b_U, self._output_transform()),
            subspace=self.subspace,
            strings=self.token_strings,
            info=self.info(),
            chunk_elements=self.chunk_elements,
            cancelled=cancelled or (lambda: False),
        )

    def _output_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What the model does to its logits after the unembedding: the bridge's architecture adapter
        says (soft-cap, logit scaling); TransformerLens <= 3 models only have the config's soft-cap."""
        adapter = getattr(self.model, "adapter", None)
        method = getattr(type(adapter), "apply_output_logits_transform", None)
        if method is not None:
            from transformer_lens.model_bridge.architecture_adapter import ArchitectureAdapter

            if method is not ArchitectureAdapter.apply_output_logits_transform:  # the adapter overrides it
                return adapter.apply_output_logits_transform
        return softcap(self.softcap) if self.softcap else None

    def _request(self, prompt, ids, added_bos, *, top_k, targets, tau, lens, intervention=None) -> Request:
        names, target_ids = self.resolve_targets(targets)
        return Request(
            prompt=prompt if isinstance(prompt, str) else None,
            ids=ids,
            added_bos=added_bos,
            top_k=top_k,
            target_names=names,
            target_ids=target_ids,
            tau=tau,
            lens=self._resolve_lens(lens),
            intervention=intervention,
        )

    def _resolve_lens(self, lens: Any) -> Lens | None:
        """None for the logit lens; a lens object for "jacobian" / "tuned" (loaded once per session: the
        demo model's shipped lenses, or what ``fit_lens`` / ``load_lens`` gave) or a lens passed in."""
        if lens is None or lens == "logit":
            return None
        if isinstance(lens, str):
            from resid_widgets.lenses import KINDS, get_lens

            if lens not in KINDS:
                raise ValueError(f"unknown lens {lens!r}; choose one of {', '.join(KINDS)}")
            if lens not in self._lenses:
                self._lenses[lens] = get_lens(lens, self)
            return self._lenses[lens]
        if not callable(getattr(lens, "transform_rows", None)):
            raise TypeError(f"lens must be 'logit', 'jacobian', 'tuned' or a lens object, not {type(lens).__name__}")
        check = getattr(lens, "check_model", None)
        if callable(check):
            check(self)
        return lens

    def load_lens(self, path, *, kind: str | None = None) -> Lens:
        """Load a lens for this session's model; ``analyze(lens=lens.kind)`` uses it from then on.

        ``path``: our ``.safetensors`` file (``lens.save``), a tuned-lens package directory (``config.json`` +
        ``params.pt``), a TransformerLens Jacobian-lens ``.pt`` artifact (or a directory holding ``lens.pt``),
        or, when no such path exists, a published lens's name on the Hugging Face hub (``kind`` required).
        ``kind`` ("jacobian" / "tuned"), when given, must match what the file holds. The file is checked
        against the model (width, layers, shapes, recorded library version) before its tensors are read.
        """
        from resid_widgets.lenses.published import load_lens_source

        lens = load_lens_source(path, self, kind=kind)
        with self._lock:
            self._lenses[lens.kind] = lens
        return lens

    def fit_lens(self, kind: str, prompts: Sequence[Any], *, progress: Progress | None = None, **kwargs: Any) -> Lens:
        """Fit a Jacobian lens (TransformerLens's estimator on this session's rows) or train a tuned lens
        (per-row affine translators, KL to the model's output) on ``prompts``; ``analyze(lens=kind)``
        uses it from then on, and ``lens.save(path)`` keeps it."""
        from resid_widgets.lenses import fit_jacobian_lens, train_tuned_lens

        if kind in ("jacobian", "tuned"):
            capabilities.require(self, f"{kind}_fit")
        if kind == "jacobian":
            lens = fit_jacobian_lens(self, prompts, progress=progress, **kwargs)
        elif kind == "tuned":
            kwargs.setdefault("steps", 200)
            kwargs.setdefault("seed", 0)
            lens = train_tuned_lens(self, prompts, progress=progress, **kwargs)
        else:
            raise ValueError(f"fit_lens fits 'jacobian' or 'tuned' lenses, not {kind!r}")
        with self._lock:
            self._lenses[kind] = lens
        return lens

    def stream(
        self,
        prompt: PromptLike,
        *,
        top_k: int = 10,
        targets: Sequence[str | int] | str | None = None,
        tau: float = 0.9,
        lens: Any = None,
        prepend_bos: bool | None = None,
        view: tuple[int, int] | None = None,
        cancelled: Callable[[], bool] | None = None,
        intervention: Any = None,
    ) -> Iterator[Update]:
        """The staged analysis of one prompt (``begin``, ``lens`` blocks, ``done``; see
        ``resid_widgets.analyses.pipeline``). An edit of the previous prompt recomputes only the
        positions from the first changed token on. ``cancelled()`` is polled between blocks.
        ``intervention`` (``resid_widgets.interventions``): the forward pass runs with its hooks, and
        every row is read from the intervened activations."""
        with self._lock:
            with self._fingerprint_scope():
                self._check_weights()
                top_k, tau = self._check_settings(top_k, tau)
                ids, added_bos = self.to_token_ids(prompt, prepend_bos=prepend_bos)
                iv = as_intervention(intervention)
                if iv is not None:
                    capabilities.require(self, "interventions")
                    iv.check(self, len(ids))
                req = self._request(prompt, ids, added_bos, top_k=top_k, targets=targets, tau=tau, lens=lens, intervention=iv)
                ctx = self._context(cancelled)
                params_key, lens_key = self._model_key(), self._lens_key(req.lens)
            if ctx.cancelled():
                raise Cancelled("superseded by a newer request")
            if getattr(self.model, "reads_out_in_trace", False):  # nnsight: the readout runs where the model runs
                if req.lens is not None:
                    raise ValueError(f"the {req.lens_kind} lens needs the residual stream here; an nnsight session reads the logit lens only")
                if iv is not None:
                    raise ValueError("interventions run as hooks on a local model; an nnsight session does not take them")
                yield from self.model.stream(req, ctx)
                return
            last, self._last = self._last, None  # its key/value cache is about to be extended
            acts, kv = self._forward(ids, last, params_key, iv)
            base = last.analysis if acts.start else None
            base_key = last.readout_key if base is not None and last.lens_key == lens_key else None
            for update in run_stages(acts, req, ctx, base=base, base_key=base_key, view=view):
                if update.stage == "begin":  # from here the forward pass and projection can serve the next edit
                    if getattr(self.model, "remote", False):  # a driver: what its engine sent back (reported)
                        update.analysis.info["bytes_from_engine"] = int(self.model.last_bytes)
                    self._last = _Last(ids, _without_logits(acts), update.analysis, None, params_key, kv, lens_key, iv)
                elif update.stage == "done":
                    self._last.readout_key = req.readout_key()
                yield update

    def analyze(
        self,
        prompt: PromptLike,
        *,
        top_k: int = 10,
        targets: Sequence[str | int] | str | None = None,
        tau: float = 0.9,
        lens: Any = None,
        prepend_bos: bool | None = None,
        progress: Progress | None = None,
        intervention: Any = None,
    ) -> Analysis:
        """Logit lens, target ranks, projection % and norms at every layer row x position (under
        ``intervention``: Steer, Ablate, AblateHead, AblateMLP from ``resid_widgets.interventions``)."""
        _report(progress, 0.0, "forward pass")
        updates = self.stream(prompt, top_k=top_k, targets=targets, tau=tau, lens=lens, prepend_bos=prepend_bos,
                              intervention=intervention)
        with backends.stages(self.model, lambda stage: _report(progress, 0.0, stage)):  # remote: queued, running, reading out
            return drain(_reporting(updates, progress))

    def continue_text(self, prompt: PromptLike, n: int = 20, *, intervention: Any = None):
        """The ``n`` tokens greedy decoding appends (a ``Continuation``; ``str()`` is its text), under
        ``intervention`` when given."""
        from resid_widgets.interventions.generate import continue_text

        capabilities.require(self, "generation")
        return continue_text(self, prompt, n, intervention=intervention)

    def analyze_batch(
        self,
        prompts: Sequence[PromptLike],
        *,
        top_k: int = 10,
        targets: Sequence[str | int] | str | None = None,
        tau: float = 0.9,
        lens: Any = None,
        prepend_bos: bool | None = None,
        progress: Progress | None = None,
    ) -> list[Analysis]:
        """One forward pass for prompts of different lengths; one ``Analysis`` per prompt.

        Prompts are right-padded: in a causal model a real token never attends to the padding
        after it, so each prompt's activations equal its single-prompt run, and its last real
        token stays at ``len - 1`` (left padding would shift positions and, with absolute position
        embeddings, change the activations).
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise TypeError("analyze_batch takes a list of prompts")
        if len(prompts) == 0:
            raise ValueError("analyze_batch got no prompts")
        with self._lock, self._fingerprint_scope():
            self._check_weights()
            top_k, tau = self._check_settings(top_k, tau)
            tokenised = [self.to_token_ids(p, prepend_bos=prepend_bos) for p in prompts]
            reqs = [self._request(p, ids, bos, top_k=top_k, targets=targets, tau=tau, lens=lens) for p, (ids, bos) in zip(prompts, tokenised)]
            lengths = [len(ids) for ids, _ in tokenised]
            pad_id = _pad_id(self.tokenizer)
            batch = torch.full((len(prompts), max(lengths)), pad_id, dtype=torch.long)
            for i, (ids, _) in enumerate(tokenised):
                batch[i, : len(ids)] = torch.as_tensor(ids)
            _report(progress, 0.0, "forward pass")
            logits, cache = self._run(batch)
            ctx = self._context(None)
            out = []
            for i, req in enumerate(reqs):
                n = lengths[i]
                acts = self._activations(req.ids, {k: v[i, :n] for k, v in cache.items()}, logits[i, :n])
                sub = None if progress is None else _sub_progress(progress, i, len(prompts))
                out.append(drain(_reporting(run_stages(acts, req, ctx), sub)))
            return out

    def _check_settings(self, top_k: int, tau: float) -> tuple[int, float]:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"top_k must be an integer, got {type(top_k).__name__}")
        limit = min(self.d_vocab, MAX_TOP_K)  # the contract's limit: at a full vocabulary one analysis would be GBs
        if not 1 <= int(top_k) <= limit:
            raise ValueError(f"top_k must be between 1 and {limit} (the limit of protocol.json traits.top_k, or the "
                             f"vocabulary of {self.d_vocab} tokens when smaller), got {top_k}")
        return int(top_k), check_tau(tau)

    def __repr__(self) -> str:
        return f"Session({self.name!r}, layers={self.n_layers}, d_model={self.d_model}, vocab={self.d_vocab})"


def _groups(cache: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
    """Cached tensors grouped by shape, so each group stacks into one tensor."""
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for t in cache.values():
        by_shape.setdefault(tuple(t.shape), []).append(t)
    return list(by_shape.values())


def _without_logits(acts: Activations) -> Activations:
    return replace(acts, logits=acts.logits[:0])


def _reporting(updates: Iterator[Update], progress: Progress | None) -> Iterator[Update]:
    for u in updates:
        _report(progress, u.fraction, {"begin": "norms and projection", "lens": "lens", "done": "done"}[u.stage])
        yield u


class _kv_cache_kwarg:
    """transformers 5 hands GPT-2's attention its key/value cache as ``cache=``, which the bridge's attention
    (TransformerLens 4.3) does not read (it reads ``past_key_values`` / ``layer_past``), so the cache would
    stay empty. While a prefix-reusing pass runs, pass it under the name the bridge reads."""

    def __init__(self, model: Any, active: bool):
        self.blocks = getattr(model, "blocks", None) if active else None
        self.handles: list = []

    @staticmethod
    def _rename(module, args, kwargs):
        cache = kwargs.get("cache")
        if kwargs.get("past_key_values") is None and cache is not None and hasattr(cache, "update"):
            kwargs["past_key_values"] = cache
        return args, kwargs

    def __enter__(self):
        for block in self.blocks or ():
            attn = getattr(block, "attn", None)
            if attn is not None:
                self.handles.append(attn.register_forward_pre_hook(self._rename, with_kwargs=True))

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    diff = np.nonzero(a[:n] != b[:n])[0]
    return int(diff[0]) if diff.size else n


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attr, None) if tokenizer is not None else None
        if value is not None:
            return int(value)
    return 0


def _report(progress: Progress | None, fraction: float, stage: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), stage)


def _sub_progress(progress: Progress, i: int, n: int) -> Progress:
    return lambda f, stage: progress((i + f) / n, f"prompt {i + 1}/{n}: {stage}")


__all__ = ["MAX_PROMPT_CHARS", "MAX_TARGETS", "MAX_TOP_K", "Session", "target_list"]
