"""Benchmark interventions against the plain analysis and activation patching against forward passes.

    python bench/bench_interventions.py --json bench/results/interventions-cpu-2core.json
    python bench/bench_interventions.py --quick            # fewer rounds, no 1,024-token slider figure

Model: a random-weight GPT-2 of 12 layers and the GPT-2 vocabulary (50257) saved as a Hugging Face directory
and loaded with ``Session(dir)``; ``--d-model 768`` is bench.py's GPT-2 small (bench/.model), the default
``--d-model 256`` (bench/.model-256, 4 heads, built in seconds) keeps a run to minutes on a shared 2-core
machine. The ratios depend on the architecture's shape, little on its width. Figures (median over rounds;
ratios are medians of per-round ratios, and ``ratios_of_fastest`` divides the fastest rounds' figures):

  plain_view_s      Session.analyze of a prompt, no prefix reuse (session._last = None)
  steered_view_s    the same with Steer(v, layers=[3, 6, 9], alpha=4) at every position
  steered_over_plain             goal <= 1.1 (median over 9 back-to-back pairs)
  forward_s         the model's plain forward pass of the 64-token prompt (the faster of two)
  patch_s           patch_resid on a 64-token clean / corrupted pair (every layer x position)
  patch_hooks_s     the same by hooked full forward passes, one batch of T per layer (the reference method)
  patch_over_RT_forwards         patch_s / (R * T * forward_s), R = n_layers + 1 rows; goal <= 0.6
  patch_over_LT_forwards         patch_s / (L * T * forward_s), TransformerLens's L * T passes
  slider_s          at 1,024 tokens, Steer(positions=[T - 16]) with a new alpha after one with another alpha:
                    the prefix before the steered position is reused (forward of 16 positions, 16 read out)
  slider_full_s     the same analysis with no prefix reuse
  widget_slider_s   the widget path: ResidWidget's steering panel (``w.steer``, a named direction at layer 6 from
                    position T - 16 on) with a new α on a 1,024-token prompt: the plain analysis is the widget's
                    cached one, the steered one reuses the session's prefix before position T - 16; includes
                    encoding and publishing both payloads
  widget_full_s     a full plain analysis of that prompt (Session.analyze, no prefix reuse)
  widget_slider_over_full        widget_slider_s / widget_full_s
  payload_bytes / steer_payload_bytes   the plain and the after payload at 1,024 tokens (steering on: both synced)

    python bench/bench_interventions.py --widget-only     # just the widget figures
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


def model_dir(d_model: int) -> Path:
    """bench.py's GPT-2 small at 768; a narrower 12-layer GPT-2 (same vocabulary) otherwise."""
    if d_model == 768:
        return build_model_dir(MODEL_DIR)
    path = HERE / f".model-{d_model}"
    if (path / "config.json").is_file():
        return path
    from transformers import GPT2Config, GPT2LMHeadModel

    full = build_model_dir(MODEL_DIR)  # its tokenizer (one word per id)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_embd=d_model, n_head=max(1, d_model // 64))).eval().save_pretrained(path)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(full).save_pretrained(path)
    return path


def measure(session, *, view_tokens: int, patch_tokens: int, repeats: int, slider: bool, pairs_n: int = 9) -> dict:
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
    pairs = []  # plain and steered back to back, in alternating order, so a change of load hits both alike
    for i in range(pairs_n):
        p = {}
        for key, fn in ([("plain_view_s", view), ("steered_view_s", lambda: view(steer))][:: 1 if i % 2 == 0 else -1]):
            p[key] = timeit(fn, key)
        pairs.append(p)
    rounds = []
    for i in range(repeats):
        r = {}
        r["forward_s"] = min(timeit(forward), timeit(forward), timeit(forward, "forward"))
        r["patch_s"] = timeit(lambda: patch_resid(session, clean, corrupted, answer, counterfactual), "patch_resid")
        rounds.append(r)
    from resid_widgets.interventions import patching_experiment

    hooks_s = timeit(lambda: patching_experiment(session, clean, corrupted, answer, counterfactual, method="hooks"), "hooks")
    ratios = {
        "steered_over_plain": statistics.median(p["steered_view_s"] / p["plain_view_s"] for p in pairs),
        "patch_over_RT_forwards": statistics.median(r["patch_s"] / ((L + 1) * patch_tokens * r["forward_s"]) for r in rounds),
        "patch_over_LT_forwards": statistics.median(r["patch_s"] / (L * patch_tokens * r["forward_s"]) for r in rounds),
    }
    best = {key: min(r[key] for r in rounds + pairs if key in r) for key in ("plain_view_s", "steered_view_s", "forward_s", "patch_s")}
    fastest = {
        "steered_over_plain": best["steered_view_s"] / best["plain_view_s"],
        "patch_over_RT_forwards": best["patch_s"] / ((L + 1) * patch_tokens * best["forward_s"]),
    }
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out.update({key: statistics.median(p[key] for p in pairs) for key in pairs[0]})
    out["pairs"] = pairs
    out["ratios_of_fastest"] = fastest
    out["rounds"] = rounds
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


def widget_slider_figures(session, n: int = 1024, rounds_n: int = 3) -> dict:
    """The α slider through ResidWidget's steering panel (the edit path the browser uses, from Python)."""
    from resid_widgets import ResidWidget

    # bench.py's tokenizer has one word per id ("w300"); the text's ids are read back, whatever they are
    text = " ".join(session.tokenizer.decode([300 + i]) for i in range(n - 1))
    T = len(session.to_token_ids(text)[0])
    w = ResidWidget(session, text, top_k=10)
    w.add_direction("v", torch.randn(session.d_model, generator=torch.Generator().manual_seed(2)))
    spec = {"on": True, "source": "named", "name": "v", "layers": [6], "positions": "from", "position": T - 16}
    w.steer = {**spec, "alpha": 1.0}
    w.steer = {**spec, "alpha": 1.5}  # the session's first prefix reuse is checked once
    rounds = []  # a slider move, then a full analysis, in each round: the machine's load hits both alike
    for i in range(rounds_n):
        moved = timeit(lambda: setattr(w, "steer", {**spec, "alpha": 2.0 + 0.5 * i}), "widget slider")
        session._last = None
        full = timeit(lambda: session.analyze(text, top_k=10), "widget full")
        w.steer = {**spec, "alpha": 1.75 + 0.5 * i}  # the plain prefix is the session's again
        rounds.append((moved, full))
    out = {"widget_slider_s": statistics.median(m for m, _ in rounds), "widget_full_s": statistics.median(f for _, f in rounds),
           "widget_slider_over_full_rounds": [m / f for m, f in rounds], "widget_tokens": T,
           "payload_bytes": len(w._payload), "steer_payload_bytes": len(w._steer_payload)}
    w.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, no 1,024-token slider figure")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--view-tokens", type=int, default=128)
    parser.add_argument("--patch-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d-model", type=int, default=256, help="768: GPT-2 small (bench.py's model)")
    parser.add_argument("--widget-only", action="store_true", help="only the widget's α slider figures")
    args = parser.parse_args(argv)
    from resid_widgets import Session

    torch.manual_seed(0)
    session = Session(str(model_dir(args.d_model)), device=args.device)
    if args.widget_only:
        out = {}
    else:
        out = measure(session, view_tokens=args.view_tokens, patch_tokens=args.patch_tokens,
                      repeats=1 if args.quick else args.repeats, slider=not args.quick)
    if not args.quick:
        out.update(widget_slider_figures(session))
        out.setdefault("ratios", {})["widget_slider_over_full"] = statistics.median(out["widget_slider_over_full_rounds"])
    out["d_model"], out["n_layers"] = session.d_model, session.n_layers
    out["machine"] = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "device": args.device}
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
