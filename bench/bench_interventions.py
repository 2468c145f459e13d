"""Benchmark interventions against the plain analysis and activation patching against forward passes.

    python bench/bench_interventions.py --json bench/results/interventions-cpu-2core.json
    python bench/bench_interventions.py --quick            # fewer rounds, no 1,024-token slider figure

Model: bench.py's random-weight GPT-2 small (12 layers, d_model 768, vocab 50257), loaded with
``Session(dir)``. Figures (median over rounds; ratios are medians of per-round ratios):

  plain_view_s      Session.analyze of a prompt, no prefix reuse (session._last = None)
  steered_view_s    the same with Steer(v, layers=[3, 6, 9], alpha=4) at every position
  steered_over_plain             goal <= 1.1
  forward_s         the model's plain forward pass of the 64-token prompt (the faster of two)
  patch_s           patch_resid on a 64-token clean / corrupted pair (every layer x position)
  patch_hooks_s     the same by hooked full forward passes, one batch of T per layer (the reference method)
  patch_over_RT_forwards         patch_s / (R * T * forward_s), R = n_layers + 1 rows; goal <= 0.6
  patch_over_LT_forwards         patch_s / (L * T * forward_s), TransformerLens's L * T passes
  slider_s          at 1,024 tokens, Steer(positions=[T - 16]) with a new alpha after one with another alpha:
                    the prefix before the steered position is reused (forward of 16 positions, 16 read out)
  slider_full_s     the same analysis with no prefix reuse
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import MODEL_DIR, build_model_dir  # noqa: E402

GOALS = {"steered_over_plain": 1.1, "patch_over_RT_forwards": 0.6}


def timeit(fn, label: str = "") -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    dt = time.perf_counter() - t0
    if label:
        print(f"  {label}: {dt:.3f} s", file=sys.stderr, flush=True)
    return dt


def measure(session, *, view_tokens: int, patch_tokens: int, repeats: int, slider: bool) -> dict:
    from resid_widgets.interventions import Steer, patch_resid

    rng = np.random.default_rng(0)
    V, L = session.d_vocab, session.n_layers
    ids = rng.integers(0, V - 1, view_tokens)
    v = torch.randn(session.d_model, generator=torch.Generator().manual_seed(0))
    steer = Steer(v, [3, 6, 9], 4.0)
    clean = rng.integers(0, V - 1, patch_tokens)
    corrupted = clean.copy()
    corrupted[patch_tokens // 2] = (clean[patch_tokens // 2] + 1) % (V - 1)
    answer, counterfactual = 11, 262
    tokens = torch.as_tensor(clean)[None]

    def view(iv=None):
        session._last = None
        session.analyze(ids, top_k=10, targets=[262, 11], intervention=iv)

    def forward():
        with torch.inference_mode():
            session.model(tokens)

    print("warm-up", file=sys.stderr, flush=True)
    view(), view(steer), patch_resid(session, clean, corrupted, answer, counterfactual)  # warm-up
    rounds = []
    for _ in range(repeats):
        r = {"plain_view_s": timeit(view, "plain view"), "steered_view_s": timeit(lambda: view(steer), "steered view")}
        r["forward_s"] = min(timeit(forward), timeit(forward, "forward"))
        r["patch_s"] = timeit(lambda: patch_resid(session, clean, corrupted, answer, counterfactual), "patch_resid")
        rounds.append(r)
    from resid_widgets.interventions import patching_experiment

    hooks_s = timeit(lambda: patching_experiment(session, clean, corrupted, answer, counterfactual, method="hooks"), "hooks")
    ratios = {
        "steered_over_plain": statistics.median(r["steered_view_s"] / r["plain_view_s"] for r in rounds),
        "patch_over_RT_forwards": statistics.median(r["patch_s"] / ((L + 1) * patch_tokens * r["forward_s"]) for r in rounds),
        "patch_over_LT_forwards": statistics.median(r["patch_s"] / (L * patch_tokens * r["forward_s"]) for r in rounds),
    }
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out.update(patch_hooks_s=hooks_s, view_tokens=view_tokens, patch_tokens=patch_tokens, repeats=repeats)
    if slider:
        out.update(slider_figures(session, rng))
        ratios["slider_over_full"] = out["slider_s"] / out["slider_full_s"]
    out["ratios"] = ratios
    out["goals_met"] = {k: ratios[k] <= g for k, g in GOALS.items()}
    return out


def slider_figures(session, rng, n: int = 1024) -> dict:
    from resid_widgets.interventions import Steer

    ids = rng.integers(0, session.d_vocab - 1, n)
    v = torch.randn(session.d_model, generator=torch.Generator().manual_seed(1))
    at = [n - 16]
    session._last = None
    session.analyze(ids, top_k=10, intervention=Steer(v, [6], 1.0, positions=at))
    session.analyze(ids, top_k=10, intervention=Steer(v, [6], 1.5, positions=at))  # the first reuse is checked once
    slider = timeit(lambda: session.analyze(ids, top_k=10, intervention=Steer(v, [6], 2.0, positions=at)), "slider")
    session._last = None
    full = timeit(lambda: session.analyze(ids, top_k=10, intervention=Steer(v, [6], 2.0, positions=at)), "slider full")
    return {"slider_s": slider, "slider_full_s": full, "slider_tokens": n}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, no 1,024-token slider figure")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--view-tokens", type=int, default=128)
    parser.add_argument("--patch-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    from resid_widgets import Session

    torch.manual_seed(0)
    session = Session(str(build_model_dir(args.model_dir)), device=args.device)
    out = measure(session, view_tokens=args.view_tokens, patch_tokens=args.patch_tokens,
                  repeats=1 if args.quick else args.repeats, slider=not args.quick)
    out["machine"] = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": args.device}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
