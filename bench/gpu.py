"""GPU figures (issue 23): the full view at 1,024 tokens on a GPT-2-small-shaped and a 1B-shaped random model.

    python bench/gpu.py --out bench/results            # needs a CUDA device

Runs bench.py's measurement (forward, full view, first paint, edit update; medians over rounds, ratios in the same
run) with ``--device cuda`` on

* the bench model (random-weight GPT-2 small: 12 layers, d_model 768, 50,257 tokens), and
* a random-weight Llama-3.2-1B-shaped model (16 layers, d_model 2048, 32 heads / 8 K/V heads, d_mlp 8192,
  128,256 tokens, tied embeddings; 1.24 B parameters), float32 on the GPU,

and writes ``gpu-gpt2small.json`` and ``gpu-llama1b.json`` (bench.py's format) into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=2048, tie_word_embeddings=True,
                rope_theta=500000.0)


def build_llama_1b(path: Path) -> Path:
    """A random-weight Llama-3.2-1B-shaped Hugging Face directory (word-level tokenizer: one word per id)."""
    if (path / "config.json").is_file():
        return path
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = LlamaConfig(**LLAMA_1B, bos_token_id=0, eos_token_id=1)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(path)
    vocab = {f"w{i}": i for i in range(cfg.vocab_size)}
    vocab["<s>"], vocab["</s>"] = 0, 1
    del vocab["w0"], vocab["w1"]
    tk = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="</s>").save_pretrained(path)
    return path


def main(argv=None) -> int:
    import bench

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--work", type=Path, default=Path("/tmp/rw-gpu-bench"))
    p.add_argument("--lengths", type=int, nargs="*", default=[128, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", choices=("gpt2small", "llama1b"), default=None)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device", flush=True)
    common = ["--device", "cuda", "--repeats", str(a.repeats), "--lengths", *map(str, a.lengths)]
    if a.only in (None, "gpt2small"):
        bench.main([*common, "--json", str(a.out / "gpu-gpt2small.json")])
    if a.only in (None, "llama1b"):
        t0 = time.perf_counter()
        d = build_llama_1b(a.work / "llama1b")
        print(f"built the 1B-shaped model in {time.perf_counter() - t0:.1f}s", flush=True)
        bench.main([*common, "--model-dir", str(d), "--json", str(a.out / "gpu-llama1b.json")])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
