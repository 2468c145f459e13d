#!/usr/bin/env python
"""Fit the Jacobian lens and train the tuned lens shipped with the demo model (resid_widgets/demo_model/lenses/).

Reproducible: fixed seed, seeded choice of text windows, fixed step counts. The text is the demo
model's own corpus (Jane Austen, Debian ``r-cran-janeaustenr``), read by ``scripts/train_demo_model.py``'s
loader, with the same split: the lenses are fitted / trained on windows from the model's training
split; the last 5 % of every novel (the model's validation split, never seen by the tokenizer, the
model or the lenses) is held out and used only to evaluate KL(model output || lens) per row. A
sample of the held-out windows is written to ``tests/data/demo_heldout_tokens.npy`` for the tests.

Usage::

    python scripts/fit_demo_lenses.py             # defaults below, ~10 minutes on 2 CPU cores
    python scripts/fit_demo_lenses.py --out /tmp/lenses --jacobian-prompts 4 --tuned-steps 20   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_demo_model.py (before torch is imported)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from train_demo_model import DEFAULT_CACHE, encode_docs, fetch_austen, make_batch, split_novels, val_windows  # noqa: E402

DEFAULT_OUT = REPO / "resid_widgets" / "demo_model" / "lenses"
DEFAULT_HELDOUT = REPO / "tests" / "data" / "demo_heldout_tokens.npy"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--heldout-out", type=Path, default=DEFAULT_HELDOUT)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq", type=int, default=128, help="tokens per window (BOS included)")
    ap.add_argument("--jacobian-prompts", type=int, default=100)
    ap.add_argument("--dim-batch", type=int, default=64)
    ap.add_argument("--tuned-windows", type=int, default=256)
    ap.add_argument("--tuned-steps", type=int, default=400)
    ap.add_argument("--tuned-lr", type=float, default=2e-3)
    ap.add_argument("--tuned-batch", type=int, default=1024)
    ap.add_argument("--eval-windows", type=int, default=96, help="held-out windows for the KL table")
    ap.add_argument("--test-windows", type=int, default=24, help="held-out windows written for the tests")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--card-only", action="store_true", help="rewrite LENSES.md from heldout_kl.json and the lens files")
    args = ap.parse_args(argv)
    if args.card_only:
        from resid_widgets.lenses import Lens

        result = json.loads((args.out / "heldout_kl.json").read_text(encoding="utf-8"))
        infos = [Lens.load(args.out / f"{k}.safetensors").info for k in ("jacobian", "tuned")]
        write_card(args.out, result, *infos)
        return 0

    t_start = time.time()
    import numpy as np
    import torch

    from resid_widgets import Session
    from resid_widgets.lenses import LogitLens, collect_rows, fit_jacobian_lens, kl_to_output, train_tuned_lens

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    session = Session(device="cpu")
    tok = session.tokenizer
    bos = tok.bos_token_id

    novels = fetch_austen(args.cache)
    train_docs, val_docs = split_novels(novels, val_frac=0.05)  # the model's own split
    train_stream, train_starts = encode_docs(tok, train_docs)
    val_stream, _ = encode_docs(tok, val_docs)
    gen = torch.Generator().manual_seed(args.seed)
    j_windows = make_batch(train_stream, train_starts, args.jacobian_prompts, args.seq, gen, bos)
    t_windows = make_batch(train_stream, train_starts, args.tuned_windows, args.seq, gen, bos)
    held = val_windows(val_stream, args.seq, bos)  # non-overlapping windows of the held-out split
    pick = torch.linspace(0, len(held) - 1, args.eval_windows).round().long()
    held = held[pick]
    print(f"[data] train {len(train_stream):,} tokens, held out {len(val_stream):,}; J-lens {len(j_windows)} x {args.seq}, "
          f"tuned lens {len(t_windows)} x {args.seq}, evaluation {len(held)} x {args.seq} held-out windows", flush=True)

    corpus = f"Jane Austen (Debian r-cran-janeaustenr), the demo model's training split, {args.seq}-token windows, seed {args.seed}"
    t0 = time.time()
    last = [0.0]

    def progress(f, stage):
        if time.time() - last[0] > 15:
            last[0] = time.time()
            print(f"  {stage} ({f:.0%}, {time.time() - t0:.0f}s)", flush=True)

    jlens = fit_jacobian_lens(session, [w for w in j_windows], progress=progress, max_seq_len=args.seq,
                              dim_batch=args.dim_batch, corpus=corpus)
    j_seconds = time.time() - t0
    print(f"[jacobian] {jlens.info['n_prompts']} prompts in {j_seconds:.0f}s", flush=True)

    t0 = time.time()
    rows = collect_rows(session, [w for w in t_windows], max_seq_len=args.seq)
    tlens = train_tuned_lens(session, None, steps=args.tuned_steps, seed=args.seed, lr=args.tuned_lr,
                             batch_tokens=args.tuned_batch, rows_cache=rows, corpus=corpus, progress=progress)
    t_seconds = time.time() - t0
    print(f"[tuned] {args.tuned_steps} steps in {t_seconds:.0f}s; mean KL over rows {tlens.losses[0]:.3f} -> "
          f"{tlens.losses[-1]:.3f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    jlens.info["fit_seconds"] = round(j_seconds, 1)
    tlens.info["n_windows"] = len(t_windows)
    jlens.save(args.out / "jacobian.safetensors")
    tlens.save(args.out / "tuned.safetensors")
    for f in args.out.glob("*.safetensors"):  # safetensors writes 0600; the shipped files must be world-readable
        f.chmod(0o644)

    # Evaluation on held-out text, with the lenses as shipped (float16, reloaded).
    from resid_widgets.lenses import JacobianLens, TunedLens

    shipped = [LogitLens.for_model(session), JacobianLens.load(args.out / "jacobian.safetensors", session_or_model=session),
               TunedLens.load(args.out / "tuned.safetensors", session_or_model=session)]
    eval_rows = collect_rows(session, [w for w in held], max_seq_len=args.seq)
    not_bos = np.tile(np.arange(args.seq) > 0, len(held))
    kl = {lens.kind: kl_to_output(session, eval_rows, lens) for lens in shipped}
    table = {k: {"mean": v.mean(1).tolist(), "mean_without_bos": v[:, not_bos].mean(1).tolist(),
                 "median": np.median(v, axis=1).tolist()} for k, v in kl.items()}
    result = {
        "heldout_windows": len(held), "heldout_tokens": int(eval_rows.shape[1]), "seq": args.seq, "seed": args.seed,
        "kl_nats": table,
        "fit_seconds": {"jacobian": round(j_seconds, 1), "tuned": round(t_seconds, 1)},
        "sizes_bytes": {p.name: p.stat().st_size for p in sorted(args.out.glob("*.safetensors"))},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": f"{os.cpu_count()}-core CPU, torch {torch.__version__}",
    }
    (args.out / "heldout_kl.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    args.heldout_out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.heldout_out, held[: args.test_windows].numpy().astype(np.int16))
    write_card(args.out, result, jlens.info, tlens.info)
    print("[eval] mean KL(model || lens) per row on held-out text (nats):")
    print("  row   " + "  ".join(f"{k:>9}" for k in kl))
    for r in range(eval_rows.shape[0]):
        print(f"  {r:>3}   " + "  ".join(f"{table[k]['mean'][r]:9.3f}" for k in kl))
    print(f"[done] {time.time() - t_start:.0f}s in all; files {result['sizes_bytes']}", flush=True)
    return 0


def write_card(out: Path, result: dict, jinfo: dict, tinfo: dict) -> None:
    kl = result["kl_nats"]
    R = len(kl["logit"]["mean"])
    row_name = lambda r: "0 (embeddings)" if r == 0 else (f"{r} (layer {r - 1} out{', the output' if r == R - 1 else ''})")
    lines = "\n".join(
        f"| {row_name(r)} | " + " | ".join(f"{kl[k]['mean'][r]:.3f}" for k in ("logit", "jacobian", "tuned"))
        + " | " + " | ".join(f"{kl[k]['mean_without_bos'][r]:.3f}" for k in ("logit", "jacobian", "tuned")) + " |"
        for r in range(R)
    )
    sizes = ", ".join(f"`{k}` {v / 1000:.0f} KB" for k, v in result["sizes_bytes"].items())
    better = {k: [r for r in range(R - 1) if kl[k]["mean"][r] < kl["logit"]["mean"][r]] for k in ("jacobian", "tuned")}
    verdict = " ".join(
        f"The {k} lens has a lower mean KL than the logit lens at "
        + ("every row but the last" if better[k] == list(range(R - 1)) else
           (f"row{'s' if len(better[k]) > 1 else ''} {', '.join(map(str, better[k]))} only" if better[k] else "no row")) + "."
        for k in better)
    s = result["settings"]
    card = f"""# Lenses shipped with the demo model

Made by `python scripts/fit_demo_lenses.py --seed {s['seed']}` ({result['machine']}): {sizes}, float16,
one `.safetensors` file each (format `resid_widgets.lens/1`, see `resid_widgets/lenses/base.py`). Loaded
offline by `resid_widgets.lenses.get_lens(kind, session)` when the session is the demo model.

- **Jacobian lens** (`jacobian.safetensors`): TransformerLens 4.3's `JacobianLens` estimator (the
  reference implementation's), run on the session's compatibility-mode rows 0..3 (row 0, the embeddings,
  included; TransformerLens itself fits rows 1..3 only), {jinfo['n_prompts']} windows of {s['seq']} tokens,
  the first {jinfo['skip_first_positions']} positions and the last excluded from the average.
  Fit time {result['fit_seconds']['jacobian']:.0f} s.
- **Tuned lens** (`tuned.safetensors`): translators `h + A h + b` per row (zero-initialised), trained
  with KL(model output || lens) (Belrose et al. 2023), Adam lr {s['tuned_lr']}, {s['tuned_steps']} steps of
  {s['tuned_batch']} tokens drawn (seed {s['seed']}) from {tinfo['n_tokens']:,} tokens ({s['tuned_windows']} windows);
  mean KL over rows {tinfo['loss_first']:.3f} -> {tinfo['loss_last']:.3f} nats during training.
  Train time {result['fit_seconds']['tuned']:.0f} s.
- Text: Jane Austen (Debian `r-cran-janeaustenr`, public domain), windows of `<|endoftext|>` + text
  from a paragraph start in the demo model's **training split**.

## Held-out evaluation
Mean KL(model output || lens) in nats per residual row, over {result['heldout_tokens']:,} tokens
({result['heldout_windows']} windows of {s['seq']} tokens) of the held-out split (the last 5 % of each
novel: never seen by the tokenizer, the model or the lenses). `heldout_kl.json` has the numbers and medians.
{verdict} (The Jacobian lens is TransformerLens's estimator as it is, an average Jacobian, not fitted to
minimise this KL; the tuned lens is.)

| row | logit | jacobian | tuned | logit (no BOS) | jacobian (no BOS) | tuned (no BOS) |
|---|---|---|---|---|---|---|
{lines}
"""
    (out / "LENSES.md").write_text(card, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
