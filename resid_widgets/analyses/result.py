"""``Analysis``: everything one prompt yields, as numpy arrays.

Rows are residual-stream points: row 0 = ``blocks.0.hook_resid_pre`` (the embeddings), row l+1 =
``blocks.l.hook_resid_post``; R = n_layers + 1 rows, T token positions (BOS included).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from resid_widgets.analyses.projection import k_for_tau, pct_at_k
from resid_widgets.analyses.rows import row_labels


@dataclass(frozen=True, eq=False)
class Analysis:
    prompt: str | None
    model_name: str
    hook_names: list[str]  # R names
    tokens: list[str]  # T token strings
    token_ids: np.ndarray  # [T] int64
    is_bos: np.ndarray  # [T] bool
    # logit lens
    top_ids: np.ndarray  # [R, T, k] int64
    top_probs: np.ndarray  # [R, T, k] float32
    top_logits: np.ndarray  # [R, T, k] float32
    log_norm: np.ndarray  # [R, T] logsumexp of each row's logits
    targets: list[str]
    target_ids: list[int]
    target_logits: np.ndarray  # [R, T, n]
    target_probs: np.ndarray  # [R, T, n]
    target_ranks: np.ndarray  # [R, T, n] int32, 0 = top
    # how the lens reads compared with the model's own output (per cell, nats)
    entropy: np.ndarray  # [R, T] entropy of the lens distribution
    kl_to_output: np.ndarray  # [R, T] KL(model output at that position || lens)
    final_top1_rank: np.ndarray  # [R, T] int32: rank under the lens of the model's own top-1 token
    emergence_row: np.ndarray  # [T] int32: first row from which the final top-1 stays in the lens's top-k (-1: never)
    target_emergence: np.ndarray  # [T, n] int32: the same for each target
    # projection onto the token subspace
    tau: float
    k: int
    singular_values: np.ndarray  # [m]
    cumulative_energy: np.ndarray  # [m]
    projection_pct: np.ndarray  # [R, T] at tau
    projection_final_pct: np.ndarray  # [T] at ln_final.hook_normalized, at tau
    # norms (seed 004)
    resid_norm: np.ndarray  # [R, T]
    attn_norm: np.ndarray  # [L, T]
    mlp_norm: np.ndarray  # [L, T]
    additivity: dict[str, Any]  # {"attn"/"mlp" or "block": rel err, "form", "holds": bool, "tolerance": float}
    strings: dict[int, str]  # token text for every id referenced above
    lens: str = "logit"  # which lens read the rows: "logit" | "jacobian" | "tuned"
    info: dict[str, Any] = field(default_factory=dict)  # model facts: d_model, d_vocab, unembed_centred...
    # cumulative projection fractions, kept so any tau can be re-thresholded without a forward pass
    _proj_cum: np.ndarray = field(default=None, repr=False)  # [R, T, m] float32
    _proj_final_cum: np.ndarray = field(default=None, repr=False)  # [T, m] float32
    _resid: np.ndarray = field(default=None, repr=False)  # [R, T, d_model] float32

    # ---- shapes -------------------------------------------------------------------------------
    @property
    def n_rows(self) -> int:
        return len(self.hook_names)

    @property
    def n_layers(self) -> int:
        return self.n_rows - 1

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def top_k(self) -> int:
        return int(self.top_ids.shape[-1])

    @property
    def row_labels(self) -> list[str]:
        """``["embed", "0", ...]``: row r > 0 is after layer r - 1 (``analyses.rows``, the one numbering)."""
        return row_labels(self.n_rows)

    @property
    def top_tokens(self) -> np.ndarray:
        """[R, T, k] token strings of ``top_ids``."""
        lookup = np.vectorize(self.strings.__getitem__, otypes=[object])
        return lookup(self.top_ids)

    @property
    def complete(self) -> bool:
        """False while a streamed analysis still has lens cells to read (they hold -1 / NaN)."""
        return bool((self.top_ids[..., 0] >= 0).all())

    @property
    def resid(self) -> np.ndarray:
        """[R, T, d_model] residual vectors (float32)."""
        return self._resid

    # ---- projection ---------------------------------------------------------------------------
    def k_for_tau(self, tau: float) -> int:
        return k_for_tau(self.cumulative_energy, tau)

    def projection_at(self, tau: float) -> np.ndarray:
        """[R, T] projection percentage at another tau, from the stored cumulative curves."""
        return pct_at_k(self._proj_cum, self.k_for_tau(tau))

    def projection_final_at(self, tau: float) -> np.ndarray:
        return pct_at_k(self._proj_final_cum, self.k_for_tau(tau))

    def with_tau(self, tau: float) -> "Analysis":
        """A copy whose ``tau``, ``k`` and projection arrays use another threshold."""
        return replace(
            self,
            tau=float(tau),
            k=self.k_for_tau(tau),
            projection_pct=self.projection_at(tau),
            projection_final_pct=self.projection_final_at(tau),
        )

    def projection_curve(self) -> np.ndarray:
        """[R, T, m]: projection percentage at every k = 1..m."""
        return 100.0 * self._proj_cum

    def concentration_index(self) -> np.ndarray:
        """[R, T]: area under the projection-fraction-vs-k/m curve (1 = all energy in the first direction)."""
        return self._proj_cum.mean(-1)

    # ---- targets ------------------------------------------------------------------------------
    def target_index(self, target: str | int) -> int:
        if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
            if int(target) in self.target_ids:  # ids first: two targets may share a display name
                return self.target_ids.index(int(target))
        elif target in self.targets:
            return self.targets.index(target)
        raise KeyError(f"{target!r} is not one of this analysis' targets {self.targets}; pass it in targets=")

    def logit_diff(self, answer: str | int, counterfactual: str | int) -> np.ndarray:
        """[R, T]: ``logit(answer) - logit(counterfactual)`` at every layer row and position."""
        a, b = self.target_index(answer), self.target_index(counterfactual)
        return self.target_logits[..., a] - self.target_logits[..., b]

    # ---- export -------------------------------------------------------------------------------
    def to_dataframe(self):
        """Long format, one row per (layer row, position)."""
        import pandas as pd

        R, T = self.n_rows, self.n_tokens
        rows = np.repeat(np.arange(R), T)
        pos = np.tile(np.arange(T), R)
        data: dict[str, Any] = {
            "row": rows,
            "layer": rows - 1,
            "hook": np.asarray(self.hook_names, dtype=object)[rows],
            "pos": pos,
            "token": np.asarray(self.tokens, dtype=object)[pos],
            "token_id": self.token_ids[pos],
            "is_bos": self.is_bos[pos],
            "top1_token": self.top_tokens[..., 0].reshape(-1),
            "top1_id": self.top_ids[..., 0].reshape(-1),
            "top1_prob": self.top_probs[..., 0].reshape(-1),
            "projection_pct": self.projection_pct.reshape(-1),
            "resid_norm": self.resid_norm.reshape(-1),
            "entropy": self.entropy.reshape(-1),
            "kl_to_output": self.kl_to_output.reshape(-1),
            "final_top1_rank": self.final_top1_rank.reshape(-1),
        }
        pad = np.full((1, T), np.nan, dtype=np.float32)
        data["attn_norm"] = np.concatenate([pad, self.attn_norm]).reshape(-1)
        data["mlp_norm"] = np.concatenate([pad, self.mlp_norm]).reshape(-1)
        for j, name in enumerate(self.targets):
            data[f"rank[{name}]"] = self.target_ranks[..., j].reshape(-1)
            data[f"prob[{name}]"] = self.target_probs[..., j].reshape(-1)
            data[f"logit[{name}]"] = self.target_logits[..., j].reshape(-1)
        return pd.DataFrame(data)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The public arrays by name (what ``--json`` writes)."""
        out = {
            "token_ids": self.token_ids,
            "is_bos": self.is_bos,
            "top_ids": self.top_ids,
            "top_probs": self.top_probs,
            "target_ids": np.asarray(self.target_ids, dtype=np.int64),
            "target_ranks": self.target_ranks,
            "target_probs": self.target_probs,
            "target_logits": self.target_logits,
            "projection_pct": self.projection_pct,
            "projection_final_pct": self.projection_final_pct,
            "singular_values": self.singular_values,
            "cumulative_energy": self.cumulative_energy,
            "resid_norm": self.resid_norm,
            "attn_norm": self.attn_norm,
            "mlp_norm": self.mlp_norm,
            "entropy": self.entropy,
            "kl_to_output": self.kl_to_output,
            "final_top1_rank": self.final_top1_rank,
            "emergence_row": self.emergence_row,
            "target_emergence": self.target_emergence,
        }
        return out

    def __repr__(self) -> str:
        return (
            f"Analysis(model={self.model_name!r}, rows={self.n_rows}, tokens={self.n_tokens}, "
            f"top_k={self.top_k}, targets={self.targets}, tau={self.tau}, k={self.k}, lens={self.lens!r})"
        )
