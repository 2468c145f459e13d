"""Prompts and targets of a ``Session``: tokenising and validating a prompt, token strings, and resolving
target tokens (``Prompts``, a mixin of ``Session``; it reads ``self.model``, ``self.tokenizer``,
``self.name``, ``self.n_ctx``, ``self.d_vocab`` and the ``self._strings`` memo)."""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch

from resid_widgets.session.tokens import token_bytes

PromptLike = Any  # str, or a sequence / 1-D tensor of token ids

#: the most targets one analysis follows (each adds [R, T] ranks, logits and probabilities)
MAX_TARGETS = 64
#: the longest text prompt accepted, before tokenising (the model's context bounds the tokens)
MAX_PROMPT_CHARS = 100_000
#: how a target given as an id is named when its text alone is ambiguous: "<text> (#id)".
_ID_TAG = re.compile(r"(.*) \(#(\d+)\)", re.DOTALL)


def target_list(targets: Any) -> list:
    """``targets`` as a list (one string or id becomes a list of one), or a clear error: a dict, a set or any
    other container is refused (not silently reduced to its keys or reordered); at most ``MAX_TARGETS``."""
    if targets is None:
        return []
    if isinstance(targets, (str, int, np.integer)):
        targets = [targets]
    elif isinstance(targets, (np.ndarray, torch.Tensor)) and targets.ndim == 1:
        targets = targets.tolist()
    elif not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of strings or token ids, not {type(targets).__name__}")
    if len(targets) > MAX_TARGETS:
        raise ValueError(f"{len(targets):,} targets; at most {MAX_TARGETS} can be followed at once")
    return list(targets)


class Prompts:
    # ---- tokens ---------------------------------------------------------------------------------
    def to_token_ids(self, prompt: PromptLike, *, prepend_bos: bool | None = None) -> tuple[np.ndarray, bool]:
        """Token ids [T] and whether a BOS was prepended. Validates the prompt."""
        if prepend_bos is not None and not isinstance(prepend_bos, (bool, np.bool_)):
            raise TypeError(f"prepend_bos must be True, False or None, not {type(prepend_bos).__name__} {prepend_bos!r}")
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ValueError("the prompt is empty; type some text")
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"the prompt is {len(prompt):,} characters long, more than {MAX_PROMPT_CHARS:,}; shorten it")
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
            if getattr(prompt, "ndim", 1) == 1 and len(prompt) > self.n_ctx:  # before converting a huge list
                raise ValueError(f"the prompt is {len(prompt):,} tokens long, more than the model's context of "
                                 f"{self.n_ctx} tokens; shorten it")
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
        targets = target_list(targets)
        if not targets:
            return [], []
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
                tid = int(tagged.group(2))
                text = self.token_strings([tid])[tid]
                if tagged.group(1) != text:  # "foo (#5)" must not name token 5 unless its text is "foo"
                    raise ValueError(f"target {t!r} names token {tid}, whose text is {text!r}: write "
                                     f"{f'{text} (#{tid})'!r} or the id {tid}")
                ids.append(tid)
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
                + ". Pick one token (for example one of the pieces listed) or pass a token id"
            )
        return names, ids

    def _id_target_name(self, token_id: int, taken: Sequence[str]) -> str:
        text = self.token_strings([token_id])[token_id]
        if self.tokenizer is not None and text not in taken and not _ID_TAG.fullmatch(text):
            if self.tokenizer.encode(text, add_special_tokens=False) == [token_id]:
                return text
        return f"{text} (#{token_id})"


def _byte_fallback(tokenizer, token_id: int, text: str) -> str:
    """A byte-level BPE token that is only part of a UTF-8 character decodes to U+FFFD on its own;
    show its bytes instead (``\\xe2\\x80``), so different partial tokens stay distinguishable."""
    raw = token_bytes(tokenizer, token_id)
    return text if raw is None else raw.decode("utf-8", errors="backslashreplace")


__all__ = ["MAX_PROMPT_CHARS", "MAX_TARGETS", "Prompts", "target_list"]
