"""``Session``: one loaded model, reused by every analysis and widget.

A session tokenises, validates input, runs *one* forward pass per prompt (or batch) caching only
the hooks the analyses need, and hands the activations to the analysis functions. It also keeps
the lens readout of the previous prompt so that an edit at the end of a prompt only reads out the
positions that changed (a causal model's activations before the edit are unchanged).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from resid_widgets import hooks
from resid_widgets.analyses.lens import LensReadout, lens_readout
from resid_widgets.analyses.norms import additivity_report, l2_norms
from resid_widgets.analyses.projection import TokenSubspace, check_tau, cumulative_fraction, pct_at_k
from resid_widgets.analyses.result import Analysis
from resid_widgets.session.loading import load_model

Progress = Callable[[float, str], None]
PromptLike = Any  # str, or a sequence / 1-D tensor of token ids


@dataclass
class _LensMemo:
    """The last prompt's lens readout, reused for an edited prompt with the same prefix."""

    key: tuple
    token_ids: np.ndarray  # [T]
    resid: torch.Tensor  # [R, T, d] the residual rows it was read from (to prove the prefix unchanged)
    readout: dict[str, np.ndarray]  # name -> [R, T, ...]


class Session:
    """A model plus everything computed once per model (SVD of W_U, token strings).

    ``model`` may be None (the embedded demo model), a hub name (``"gpt2"``), a local Hugging Face
    directory, a loaded ``TransformerBridge`` or ``HookedTransformer``. Thread-safe: analyses run one
    at a time.
    """

    def __init__(self, model: Any = None, *, device: str | None = None):
        if isinstance(model, Session):
            raise TypeError("model is already a Session; use it directly")
        self.model, self.name, self.is_demo = load_model(model, device=device)
        cfg = self.model.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.n_ctx: int = int(cfg.n_ctx)
        self.d_model: int = int(self.model.W_U.shape[0])
        self.d_vocab: int = int(self.model.W_U.shape[1])
        #: attention and MLP read the same residual (GPT-NeoX / Pythia): no resid_mid hook
        self.parallel: bool = hooks.is_parallel(self.model)
        cap = float(getattr(cfg, "output_logits_soft_cap", 0.0) or 0.0)
        #: the model's output soft-cap c (logits = c * tanh(z / c)), or None
        self.softcap: float | None = cap if cap > 0 else None
        self._subspace: TokenSubspace | None = None
        self._strings: dict[int, str] = {}
        self._memo: _LensMemo | None = None
        self._info: dict[str, Any] | None = None
        self._weights_key: tuple | None = None
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
        key = tuple((n, t.data_ptr(), t._version, tuple(t.shape)) for n, t in weights.items())
        if key == self._weights_key:
            return
        self._subspace, self._info, self._memo = None, None, None
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
        }

    # ---- tokens ---------------------------------------------------------------------------------
    def to_token_ids(self, prompt: PromptLike, *, prepend_bos: bool | None = None) -> tuple[np.ndarray, bool]:
        """Token ids [T] and whether a BOS was prepended. Validates the prompt."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("the prompt is empty; type some text")
            if self.tokenizer is None:
                raise ValueError(
                    f"the model {self.name!r} has no tokenizer, so a text prompt cannot be tokenised; pass token ids "
                    "(a list of ints or a 1-D tensor) instead"
                )
            ids = self.model.to_tokens(prompt, prepend_bos=prepend_bos, truncate=False)[0].cpu().numpy()
            bos_id = getattr(self.tokenizer, "bos_token_id", None)
            added_bos = self._default_prepend_bos() if prepend_bos is None else bool(prepend_bos)
            added_bos = added_bos and bos_id is not None and len(ids) > 0 and int(ids[0]) == bos_id
        elif isinstance(prompt, (list, tuple, np.ndarray, torch.Tensor)):
            ids = np.asarray(prompt.cpu() if isinstance(prompt, torch.Tensor) else prompt)
            if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
                raise TypeError("token ids must be a 1-D sequence of integers")
            if ids.size == 0:
                raise ValueError("the prompt is empty: no token ids")
            ids = ids.astype(np.int64)
            if ids.min() < 0 or ids.max() >= self.d_vocab:
                raise ValueError(f"token ids must be in [0, {self.d_vocab}), got {ids.min()}..{ids.max()}")
            bos_id = getattr(self.tokenizer, "bos_token_id", None) if self.tokenizer is not None else None
            added_bos = bos_id is not None and int(ids[0]) == bos_id
        else:
            raise TypeError(f"prompt must be a string or a sequence of token ids, not {type(prompt).__name__}")
        if len(ids) > self.n_ctx:
            raise ValueError(
                f"the prompt is {len(ids)} tokens long, more than the model's context of {self.n_ctx} tokens; shorten it"
            )
        if len(ids) == 0:
            raise ValueError("the prompt produced no tokens")
        return ids.astype(np.int64), bool(added_bos)

    def _default_prepend_bos(self) -> bool:
        return bool(getattr(self.model.cfg, "default_prepend_bos", True))

    def token_strings(self, ids) -> dict[int, str]:
        """Text of each distinct id (decoded once per session)."""
        wanted = {int(i) for i in np.unique(np.asarray(ids))}
        missing = sorted(wanted - self._strings.keys())
        if missing:
            tok = self.tokenizer
            if tok is None:
                texts = [f"#{i}" for i in missing]
            else:
                texts = tok.batch_decode([[i] for i in missing], clean_up_tokenization_spaces=False)
                texts = [_byte_fallback(tok, i, t) if "\ufffd" in t else t for i, t in zip(missing, texts)]
            self._strings.update(zip(missing, texts))
        return {i: self._strings[i] for i in wanted}

    def resolve_targets(self, targets: Sequence[str | int] | str | None) -> tuple[list[str], list[int]]:
        """Target strings or ids -> (unique display names, single token ids).

        A string must be exactly one token. An id is named by its text when that text encodes back to
        the same single id and is not taken yet, else ``"<text> (#id)"``; both forms are accepted back,
        so the names an ``Analysis`` reports always round-trip. Every bad target is named in one error.
        """
        if targets is None:
            return [], []
        if isinstance(targets, (str, int, np.integer)):
            targets = [targets]
        names: list[str] = []
        ids: list[int] = []
        problems: list[str] = []
        for t in targets:
            if isinstance(t, bool) or not isinstance(t, (str, int, np.integer)):
                raise TypeError(f"targets must be strings or token ids, got {type(t).__name__}")
            if not isinstance(t, str):
                if not 0 <= int(t) < self.d_vocab:
                    raise ValueError(f"target id {t} is outside the vocabulary [0, {self.d_vocab})")
                ids.append(int(t))
                names.append(self._id_target_name(int(t), names))
                continue
            if t == "":
                raise ValueError("a target is empty; give one token of the vocabulary, or a token id")
            tagged = _ID_TAG.fullmatch(t)
            if tagged is not None and 0 <= int(tagged.group(2)) < self.d_vocab:
                ids.append(int(tagged.group(2)))
                names.append(t)
                continue
            if self.tokenizer is None:
                raise ValueError(f"the model {self.name!r} has no tokenizer; give targets as token ids, not {t!r}")
            enc = self.tokenizer.encode(t, add_special_tokens=False)
            if len(enc) != 1:
                pieces = [self.token_strings([i])[int(i)] for i in enc]
                problems.append(f"{t!r} is {len(enc)} tokens {pieces}, not one" if enc else f"{t!r} encodes to no token")
                continue
            ids.append(int(enc[0]))
            names.append(t)
        if problems:
            raise ValueError(
                "targets must be single tokens of this model's vocabulary: " + "; ".join(problems)
                + ". Pick one token (for example a first piece above) or pass a token id"
            )
        return names, ids

    def _id_target_name(self, token_id: int, taken: Sequence[str]) -> str:
        text = self.token_strings([token_id])[token_id]
        if self.tokenizer is not None and text not in taken and not _ID_TAG.fullmatch(text):
            if self.tokenizer.encode(text, add_special_tokens=False) == [token_id]:
                return text
        return f"{text} (#{token_id})"

    # ---- analysis -------------------------------------------------------------------------------
    def _needed_hooks(self) -> list[str]:
        """The hooks the analyses read, in the order the forward pass computes them."""
        return hooks.needed_hooks(self.n_layers, parallel=self.parallel) + [hooks.FINAL_NORM]

    def _run(self, batch_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        order = self._needed_hooks()
        needed = set(order)
        with torch.inference_mode():
            logits, cache = self.model.run_with_cache(batch_ids.to(self.device), names_filter=lambda n: n in needed)
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

    def analyze(
        self,
        prompt: PromptLike,
        *,
        top_k: int = 10,
        targets: Sequence[str | int] | str | None = None,
        tau: float = 0.9,
        prepend_bos: bool | None = None,
        progress: Progress | None = None,
    ) -> Analysis:
        """Logit lens, target ranks, projection % and norms at every layer row x position."""
        with self._lock:
            self._check_weights()
            top_k, tau = self._check_settings(top_k, tau)
            target_names, target_ids = self.resolve_targets(targets)
            ids, added_bos = self.to_token_ids(prompt, prepend_bos=prepend_bos)
            _report(progress, 0.0, "forward pass")
            logits, cache = self._run(torch.as_tensor(ids)[None])
            return self._build(
                prompt if isinstance(prompt, str) else None,
                ids,
                added_bos,
                {k: v[0] for k, v in cache.items()},
                logits[0],
                top_k=top_k,
                target_names=target_names,
                target_ids=target_ids,
                tau=tau,
                progress=progress,
                reuse=True,
            )

    def analyze_batch(
        self,
        prompts: Sequence[PromptLike],
        *,
        top_k: int = 10,
        targets: Sequence[str | int] | str | None = None,
        tau: float = 0.9,
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
        with self._lock:
            self._check_weights()
            top_k, tau = self._check_settings(top_k, tau)
            target_names, target_ids = self.resolve_targets(targets)
            tokenised = [self.to_token_ids(p, prepend_bos=prepend_bos) for p in prompts]
            lengths = [len(ids) for ids, _ in tokenised]
            pad_id = _pad_id(self.tokenizer)
            batch = torch.full((len(prompts), max(lengths)), pad_id, dtype=torch.long)
            for i, (ids, _) in enumerate(tokenised):
                batch[i, : len(ids)] = torch.as_tensor(ids)
            _report(progress, 0.0, "forward pass")
            logits, cache = self._run(batch)
            out = []
            for i, (p, (ids, added_bos)) in enumerate(zip(prompts, tokenised)):
                n = lengths[i]
                sub = None if progress is None else _sub_progress(progress, i, len(prompts))
                out.append(
                    self._build(
                        p if isinstance(p, str) else None,
                        ids,
                        added_bos,
                        {k: v[i, :n] for k, v in cache.items()},
                        logits[i, :n],
                        top_k=top_k,
                        target_names=target_names,
                        target_ids=target_ids,
                        tau=tau,
                        progress=sub,
                        reuse=False,
                    )
                )
            return out

    def _check_settings(self, top_k: int, tau: float) -> tuple[int, float]:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"top_k must be an integer, got {type(top_k).__name__}")
        if not 1 <= int(top_k) <= self.d_vocab:
            raise ValueError(f"top_k must be between 1 and the vocabulary size {self.d_vocab}, got {top_k}")
        return int(top_k), check_tau(tau)

    def _build(
        self,
        prompt: str | None,
        ids: np.ndarray,
        added_bos: bool,
        cache: dict[str, torch.Tensor],  # one prompt, [T, d]
        logits: torch.Tensor,  # [T, d_vocab]
        *,
        top_k: int,
        target_names: list[str],
        target_ids: list[int],
        tau: float,
        progress: Progress | None,
        reuse: bool,
    ) -> Analysis:
        L, T = self.n_layers, len(ids)
        hook_names = hooks.residual_rows(L)
        resid = torch.stack([cache[h].float() for h in hook_names])  # [R, T, d]
        R = resid.shape[0]

        # Logit lens (the expensive part): reuse positions before an edit.
        key = (id(self.model), self._weights_key, top_k, tuple(target_ids))
        start = 0
        memo = self._memo if reuse else None
        if memo is not None and memo.key == key:
            start = _common_prefix(memo.token_ids, ids)
            if start == T:  # identical prompt: recompute the last position anyway (cheap)
                start = T - 1
            # Same tokens are not enough (weights may have been edited in place): the prefix's
            # residual rows must be the ones the memo was read from.
            if start and not torch.allclose(resid[:, :start].cpu(), memo.resid[:, :start], rtol=1e-5, atol=1e-5):
                start = 0
        W_U, b_U = self._unembed()
        with torch.inference_mode():
            normed = self.model.ln_final(resid[:, start:].to(W_U.dtype)).float()  # each row's own LN
            # The final row's readout is the model's own output: reuse the forward pass's logits when
            # they agree with ln_final(r) @ W_U + b_U (checked at the last position; a model whose
            # output differs, e.g. soft-capped logits, gets the formula like every other row).
            final = logits[start:].float()
            ref = normed[-1, -1] @ W_U.float() + (0 if b_U is None else b_U.float())
            if self.softcap:
                ref = self.softcap * torch.tanh(ref / self.softcap)
            lens_vs_model = float((ref - final[-1]).abs().max())
            reuse_final = lens_vs_model <= 1e-4 * max(1.0, float(ref.abs().max()))
        lens_progress = None if progress is None else (lambda f: _report(progress, 0.1 + 0.8 * f, "logit lens"))
        fresh = lens_readout(
            normed.reshape(-1, normed.shape[-1]),
            W_U,
            b_U,
            top_k=top_k,
            target_ids=target_ids,
            known_logits=final if reuse_final else None,
            softcap=self.softcap,
            progress=lens_progress,
        )
        part = _reshape_readout(fresh, R, T - start)
        if start > 0:
            readout = {k: np.concatenate([memo.readout[k][:, :start], v], axis=1) for k, v in part.items()}
        else:
            readout = part
        if reuse:
            self._memo = _LensMemo(key=key, token_ids=ids.copy(), resid=resid.cpu(), readout=readout)

        # Projection onto the token subspace.
        _report(progress, 0.92, "projection")
        sub = self.subspace
        k = sub.k_for_tau(tau)
        proj_cum = cumulative_fraction(resid, sub.U).numpy(force=True)
        final_cum = cumulative_fraction(cache[hooks.FINAL_NORM].float(), sub.U).numpy(force=True)

        # Norms and the residual decomposition check.
        attn = torch.stack([cache[f"blocks.{l}.hook_attn_out"] for l in range(L)])
        mlp = torch.stack([cache[f"blocks.{l}.hook_mlp_out"] for l in range(L)])
        additivity = additivity_report(cache, L, parallel=self.parallel)

        info = self.info()
        info["lens_vs_model_max_abs"] = lens_vs_model  # formula (soft-cap included) vs the model's logits, last position

        ids_needed = np.concatenate([ids, readout["top_ids"].reshape(-1), np.asarray(target_ids, dtype=np.int64)])
        strings = self.token_strings(ids_needed)
        _report(progress, 1.0, "done")
        return Analysis(
            prompt=prompt,
            model_name=self.name,
            hook_names=hook_names,
            tokens=[strings[int(i)] for i in ids],
            token_ids=ids,
            is_bos=np.array([added_bos and i == 0 for i in range(T)]),
            top_ids=readout["top_ids"],
            top_probs=readout["top_probs"],
            top_logits=readout["top_logits"],
            log_norm=readout["log_norm"],
            targets=list(target_names),
            target_ids=list(target_ids),
            target_logits=readout["target_logits"],
            target_probs=readout["target_probs"],
            target_ranks=readout["target_ranks"],
            tau=tau,
            k=k,
            singular_values=sub.singular_values,
            cumulative_energy=sub.cumulative_energy,
            projection_pct=pct_at_k(proj_cum, k),
            projection_final_pct=pct_at_k(final_cum, k),
            resid_norm=l2_norms(resid),
            attn_norm=l2_norms(attn),
            mlp_norm=l2_norms(mlp),
            additivity=additivity,
            strings=strings,
            info=info,
            _proj_cum=proj_cum,
            _proj_final_cum=final_cum,
            _resid=resid.numpy(force=True),  # force: GPU tensors come back to the host
        )

    def __repr__(self) -> str:
        return f"Session({self.name!r}, layers={self.n_layers}, d_model={self.d_model}, vocab={self.d_vocab})"


#: how a target given as an id is named when its text alone is ambiguous: "<text> (#id)".
_ID_TAG = re.compile(r"(.*) \(#(\d+)\)", re.DOTALL)


def _groups(cache: dict[str, torch.Tensor]) -> list[list[torch.Tensor]]:
    """Cached tensors grouped by shape, so each group stacks into one tensor."""
    by_shape: dict[tuple, list[torch.Tensor]] = {}
    for t in cache.values():
        by_shape.setdefault(tuple(t.shape), []).append(t)
    return list(by_shape.values())


def _reshape_readout(r: LensReadout, R: int, T: int) -> dict[str, np.ndarray]:
    return {
        "top_ids": r.top_ids.reshape(R, T, -1),
        "top_probs": r.top_probs.reshape(R, T, -1),
        "top_logits": r.top_logits.reshape(R, T, -1),
        "log_norm": r.log_norm.reshape(R, T),
        "target_logits": r.target_logits.reshape(R, T, -1),
        "target_probs": r.target_probs.reshape(R, T, -1),
        "target_ranks": r.target_ranks.reshape(R, T, -1),
    }


_BYTE_DECODER: dict[str, int] | None = None


def _byte_fallback(tokenizer, token_id: int, text: str) -> str:
    """A byte-level BPE token that is only part of a UTF-8 character decodes to U+FFFD on its own;
    show its bytes instead (``\\xe2\\x80``), so different partial tokens stay distinguishable."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        # GPT-2's byte <-> printable-character table (transformers 5 no longer exports it): printable
        # latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, in byte order.
        keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = [b for b in range(256) if b not in keep]
        _BYTE_DECODER = {chr(b): b for b in keep} | {chr(256 + n): b for n, b in enumerate(extra)}
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str) or not piece or any(c not in _BYTE_DECODER for c in piece):
        return text
    return bytes(_BYTE_DECODER[c] for c in piece).decode("utf-8", errors="backslashreplace")


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


__all__ = ["Session"]
