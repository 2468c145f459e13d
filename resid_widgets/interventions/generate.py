"""Greedy continuation of a prompt, with or without an intervention (before | after, side by side)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from resid_widgets.interventions.core import as_intervention, installed

MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class Continuation:
    """``text`` the decoded new tokens (plain text); ``ids`` [n] their ids."""

    prompt: str | None
    text: str
    ids: np.ndarray
    intervention: dict | None

    def __str__(self) -> str:
        return self.text


def continue_text(session: Any, prompt: Any, n: int = 20, *, intervention: Any = None) -> Continuation:
    """The ``n`` tokens greedy decoding appends to ``prompt`` (argmax of the last position's logits, one full
    forward pass per token), under ``intervention``: with ``positions=None`` every position, the new tokens
    too, is changed; explicit non-negative positions stay where they are, negative ones count from the end
    of the growing text (``-1``: always the newest token)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 0 <= int(n) <= MAX_NEW_TOKENS:
        raise ValueError(f"n must be an integer from 0 to {MAX_NEW_TOKENS}, got {n!r}")
    iv = as_intervention(intervention)
    with session._lock:
        ids, _ = session.to_token_ids(prompt)
        if iv is not None:
            iv.check(session, len(ids))
        prompt_len = len(ids)
        new: list[int] = []
        for _ in range(int(n)):
            if len(ids) >= session.n_ctx:
                break
            with installed(session, iv, len(ids)), torch.inference_mode():
                logits = session.model(torch.as_tensor(ids)[None].to(session.device), return_type="logits")
            nxt = int(logits[0, -1].argmax())
            new.append(nxt)
            ids = np.append(ids, nxt)
        tok = session.tokenizer
        text = tok.decode(new, clean_up_tokenization_spaces=False) if tok is not None else " ".join(f"#{i}" for i in new)
        return Continuation(prompt=prompt if isinstance(prompt, str) else None, text=text,
                            ids=np.asarray(ids[prompt_len:], dtype=np.int64),
                            intervention=None if iv is None else iv.describe())


__all__ = ["Continuation", "continue_text"]
