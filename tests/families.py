"""Random-weight Hugging Face model directories, one per model family, built offline (nothing downloaded).

Each directory is what ``save_pretrained`` writes (config.json, model.safetensors, a tiny tokenizer), so it is
loaded exactly like a downloaded checkpoint: ``TransformerBridge.boot_transformers(dir)``, which is what
``resid_widgets.Session(dir)`` does. Prompts are token ids (``Session.analyze`` accepts a list of ints).

Shapes are tiny (2 layers, d_model 64, 4 heads of 16, vocab 512) and the weights are float32. Random
initialisation leaves every norm at weight 1 / bias 0 and every linear bias at 0, which hides a missing
bias or a norm applied twice, so every norm parameter and every bias is perturbed. Sliding-window
attention gets a window shorter than the probe prompt so that the mask matters.

    from families import FAMILIES, PROBE_IDS, build_family_dir, hf_readout   # tests/ is on sys.path
    path = build_family_dir(FAMILIES["pythia"], tmp_path / "pythia")
    ref = hf_readout(path, PROBE_IDS)         # HF's own residual rows, logits and per-row readout

Reusable by other tests: LayerNorm (gpt2, neox), RMSNorm (llama...), rotary (all but gpt2), parallel
attention + MLP (pythia), soft-capped logits (gemma2), sandwich norms (gemma2/3, olmo2). Text prompts work
too: every directory carries ``build_tokenizer()``'s BPE, in which "The", " capital", " of", " France",
" is", " Paris", " London" are single tokens (GPT-NeoX / Pythia do not prepend BOS, the others do).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

N_LAYERS = 2
D_MODEL = 64
N_HEADS = 4
D_HEAD = 16
D_MLP = 128
VOCAB = 512
N_CTX = 128
SLIDING_WINDOW = 4  # shorter than PROBE_IDS, so sliding-window layers differ from full attention
PERTURB = 0.3  # std of the noise added to every norm parameter and bias
SOFTCAP = 30.0  # Gemma-2's final_logit_softcapping here
LOGIT_MAX = 8.0  # lm_head is scaled so the probe's largest logit is about this (peaked, not uniform, lens rows)
SOFTCAP_OVERSHOOT = 4.0  # ... and for soft-capped models this many caps, so the cap changes the distribution

#: the probe prompt: 12 token ids, fixed (the first one plays BOS for models whose bos_token_id is 1)
PROBE_IDS: list[int] = [1, 17, 305, 42, 42, 7, 499, 123, 64, 256, 3, 88]


@dataclass(frozen=True)
class Family:
    key: str  # short name used in test ids and tables
    name: str  # what people call it
    model_type: str  # Hugging Face config model_type
    block: str  # "sequential" (resid_mid exists) or "parallel" (attn and MLP read the same resid_pre)
    norm: str  # "LayerNorm" or "RMSNorm"
    config: dict[str, Any] = field(default_factory=dict)  # model-type specific config keys
    softcap: float | None = None  # final_logit_softcapping
    notes: str = ""

    def config_kwargs(self) -> dict[str, Any]:
        if self.model_type == "gpt2":
            common = dict(n_layer=N_LAYERS, n_embd=D_MODEL, n_head=N_HEADS, n_inner=D_MLP, n_positions=N_CTX)
        else:
            common = dict(
                num_hidden_layers=N_LAYERS,
                hidden_size=D_MODEL,
                num_attention_heads=N_HEADS,
                intermediate_size=D_MLP,
                max_position_embeddings=N_CTX,
            )
        return dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0, **common, **self.config)


_GQA = dict(num_key_value_heads=2, head_dim=D_HEAD)

FAMILIES: dict[str, Family] = {
    f.key: f
    for f in [
        Family("gpt2", "GPT-2", "gpt2", "sequential", "LayerNorm", dict(activation_function="gelu_new")),
        Family(
            "neox",
            "GPT-NeoX (sequential)",
            "gpt_neox",
            "sequential",
            "LayerNorm",
            dict(use_parallel_residual=False, rotary_pct=0.25, hidden_act="gelu"),
        ),
        Family(
            "pythia",
            "Pythia (GPT-NeoX parallel)",
            "gpt_neox",
            "parallel",
            "LayerNorm",
            dict(use_parallel_residual=True, rotary_pct=0.25, hidden_act="gelu"),
        ),
        Family("llama", "Llama", "llama", "sequential", "RMSNorm", dict(**_GQA)),
        Family("mistral", "Mistral", "mistral", "sequential", "RMSNorm", dict(**_GQA, sliding_window=SLIDING_WINDOW)),
        Family("qwen2", "Qwen2", "qwen2", "sequential", "RMSNorm", dict(**_GQA)),
        Family(
            "gemma2",
            "Gemma-2",
            "gemma2",
            "sequential",
            "RMSNorm",
            dict(
                **_GQA,
                query_pre_attn_scalar=D_HEAD,
                sliding_window=SLIDING_WINDOW,
                layer_types=["sliding_attention", "full_attention"],
                final_logit_softcapping=SOFTCAP,
                attn_logit_softcapping=50.0,
                tie_word_embeddings=False,  # lm_head scaled up alone, so the cap bites without huge embeddings
            ),
            softcap=SOFTCAP,
            notes="sandwich norms, embeddings scaled by sqrt(d_model), logit soft-cap",
        ),
        Family(
            "gemma3",
            "Gemma-3",
            "gemma3_text",
            "sequential",
            "RMSNorm",
            dict(
                **_GQA,
                query_pre_attn_scalar=D_HEAD,
                sliding_window=SLIDING_WINDOW,
                layer_types=["sliding_attention", "full_attention"],
            ),
            notes="sandwich norms, q/k norms, embeddings scaled by sqrt(d_model)",
        ),
        Family("phi3", "Phi-3", "phi3", "sequential", "RMSNorm", dict(num_key_value_heads=N_HEADS), notes="fused qkv and gate_up"),
        Family("olmo2", "OLMo-2", "olmo2", "sequential", "RMSNorm", dict(**_GQA), notes="norms after attention/MLP, q/k norms"),
    ]
}


_TOKENIZER_TEXT = [
    "The capital of France is Paris. The capital of England is London. The capital of Italy is Rome.",
    "Mr. and Mrs. Bennet had five daughters. It is a truth universally acknowledged.",
    "This is a sentence. This is another sentence. Step 1: add. Step 2: subtract. Therefore the answer is 4.",
    "When Mary and John went to the store, John gave a drink to Mary.",
]


@functools.lru_cache(maxsize=1)
def build_tokenizer():
    """A byte-level BPE of exactly VOCAB tokens (<pad>=0, <s>=1, </s>=2), trained here in ~30 ms.

    Some TransformerLens adapters (Llama, Mistral, Phi-3, OLMo-2) cannot boot a directory without a
    tokenizer (they fall back to a sentencepiece class), so every directory gets this one.
    """
    import random

    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(0)  # pseudo-words fill the merges the English lines leave over
    syllables = "ka ri to ne su la mo pe chi an the re in on er st ed ing ly tion".split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    text = _TOKENIZER_TEXT * 20 + [" ".join(words[i : i + 12]) + "." for i in range(0, len(words), 12)]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(text, vocab_size=VOCAB, min_frequency=1, special_tokens=["<pad>", "<s>", "</s>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    assert len(tok) == VOCAB and (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    return tok


def build_hf_model(family: Family, *, seed: int = 0, perturb: float = PERTURB):
    """The random-weight ``AutoModelForCausalLM`` of a family (float32, eval mode), norms and biases perturbed."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family.model_type, **family.config_kwargs())
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or "norm" in name or ".ln_" in name:
                p.add_(torch.randn(p.shape, generator=g) * perturb)
        _scale_logits(model, SOFTCAP_OVERSHOOT * family.softcap if family.softcap else LOGIT_MAX)
    return model


def _scale_logits(model, target: float) -> None:
    """Scale lm_head so the probe prompt's largest *uncapped* logit is ``target``.

    Random init gives logits below 1 (near-uniform lens rows, where a wrong readout hides). Tied
    embeddings (GPT-2, Gemma-3) scale with it, which changes the hidden states, so there the
    largest logit lands near ``target``, not on it.
    """
    head = model.get_output_embeddings()
    normed = model(torch.tensor([PROBE_IDS]), output_hidden_states=True).hidden_states[-1][0]
    head.weight.mul_(target / float(head(normed).abs().max()))


def build_family_dir(family: Family | str, out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Save the family's random model and the shared tokenizer as a Hugging Face directory."""
    family = FAMILIES[family] if isinstance(family, str) else family
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_hf_model(family, seed=seed).save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    return out


def _final_norm(model):
    base = model.base_model
    for attr in ("norm", "final_layer_norm", "ln_f"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise AttributeError(f"no final norm found on {type(base).__name__}")


@dataclass
class HFReadout:
    """Hugging Face's own numbers for one prompt (float64 numpy, batch dim dropped)."""

    resid: np.ndarray  # [L + 1, T, d]: hidden_states[0..L-1] and the final norm's input (the last block's output)
    logits: np.ndarray  # [T, V]: the model's output (soft-capped where the model caps)
    row_logits: np.ndarray  # [L + 1, T, V]: rows 0..L-1 = hidden_states[l] -> final norm -> lm_head -> cap;
    #                         row L = the model's own logits
    uncapped_max: float  # largest |logit| of any row before the soft-cap
    self_check: float  # max |readout of the final norm's input - the model's logits| (HF against itself)

    @property
    def row_logprobs(self) -> np.ndarray:
        z = self.row_logits
        return z - logsumexp(z)[..., None]


def logsumexp(z: np.ndarray) -> np.ndarray:
    m = z.max(-1, keepdims=True)
    return (np.log(np.exp(z - m).sum(-1, keepdims=True)) + m)[..., 0]


def hf_readout(path: str | os.PathLike, ids: list[int]) -> HFReadout:
    """Load the directory with transformers and read every hidden state out as the model reads its last one.

    For most HF causal LMs the last entry of ``hidden_states`` is already after the final norm, so the
    last block's output is taken from the final norm's input (a forward pre-hook) instead.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    cap = getattr(model.config, "final_logit_softcapping", None)
    norm, head = _final_norm(model), model.get_output_embeddings()
    seen: list[torch.Tensor] = []
    handle = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
    finally:
        handle.remove()
    assert len(seen) == 1, f"the final norm ran {len(seen)} times"
    with torch.no_grad():
        resid = torch.cat([torch.stack(out.hidden_states[:-1])[:, 0], seen[0]]).double()  # [L+1, T, d]
        norm, head = norm.double(), head.double()
        uncapped = head(norm(resid))
        capped = cap * torch.tanh(uncapped / cap) if cap else uncapped
        logits = out.logits[0].double()
        row_logits = torch.cat([capped[:-1], logits[None]])
    return HFReadout(
        resid=resid.numpy(),
        logits=logits.numpy(),
        row_logits=row_logits.numpy(),
        uncapped_max=float(uncapped.abs().max()),
        self_check=float((capped[-1] - logits).abs().max()),
    )
