"""``resid-widgets``: the analyses from a terminal.

    resid-widgets analyze "Mr. and Mrs." --top-k 5 --targets " Bennet" " Darcy"
    resid-widgets analyze "The capital of France is" --model gpt2 --json lens.json
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

import numpy as np


def _visible(text: str, width: int) -> str:
    shown = text.replace("\n", "\\n").replace("\t", "\\t").replace(" ", "·")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def format_lens_table(analysis, *, max_positions: int = 12, width: int = 9) -> str:
    """Layers (rows) x positions (columns), each cell the top-1 token at that layer."""
    T = analysis.n_tokens
    positions = list(range(max(0, T - max_positions), T))
    label_w = max(len(s) for s in ["layer", *analysis.row_labels]) + 1
    head = "layer".ljust(label_w) + " ".join(_visible(analysis.tokens[p], width).ljust(width) for p in positions)
    lines = [head, "-" * len(head)]
    top = analysis.top_tokens[..., 0]
    for r, label in enumerate(analysis.row_labels):
        cells = " ".join(_visible(top[r, p], width).ljust(width) for p in positions)
        lines.append(label.ljust(label_w) + cells)
    if len(positions) < T:
        lines.append(f"(last {len(positions)} of {T} positions; --positions N shows more)")
    return "\n".join(lines)


def format_summary(analysis, *, top_k: int) -> str:
    keep = ~analysis.is_bos
    lines = []
    last = analysis.n_tokens - 1
    lines.append(f"model: {analysis.model_name}    tokens: {analysis.n_tokens}    rows: {analysis.n_rows}    lens: {analysis.lens}")
    probs = analysis.top_probs[-1, last]
    toks = analysis.top_tokens[-1, last]
    lines.append("next token (final layer): " + ", ".join(f"{t!r} {p:.1%}" for t, p in zip(toks[:top_k], probs[:top_k])))
    lines.append("")
    lines.append(
        f"projection onto the token subspace: tau={analysis.tau:g}, k={analysis.k} of {len(analysis.singular_values)} dims"
    )
    header = f"{'layer':>6} {'proj% mean':>11} {'proj% last':>11} {'|resid|':>9} {'|attn|':>9} {'|mlp|':>9} {'KL nats':>8}"
    lines.append(header + "".join(f" {('rank ' + t)[:14]:>14}" for t in analysis.targets))
    for r, label in enumerate(analysis.row_labels):
        pct = analysis.projection_pct[r]
        mean = float(pct[keep].mean()) if keep.any() else float(pct.mean())
        attn = "" if r == 0 else f"{analysis.attn_norm[r - 1][keep].mean():9.2f}"
        mlp = "" if r == 0 else f"{analysis.mlp_norm[r - 1][keep].mean():9.2f}"
        kl = analysis.kl_to_output[r][keep].mean() if keep.any() else analysis.kl_to_output[r].mean()
        row = f"{label:>6} {mean:11.2f} {pct[last]:11.2f} {analysis.resid_norm[r][keep].mean():9.2f} {attn:>9} {mlp:>9} {kl:8.3f}"
        row += "".join(f" {int(analysis.target_ranks[r, last, j]):14d}" for j in range(len(analysis.targets)))
        lines.append(row)
    lines.append(f"ln_final.hook_normalized projection % at the last position: {analysis.projection_final_pct[last]:.2f}")
    add = analysis.additivity
    verdict = "holds" if add["holds"] else "DOES NOT HOLD: norms of attn/mlp outputs are not the residual updates"
    if add.get("form") == "parallel":
        lines.append(f"resid_pre + attn_out + mlp_out = resid_post (parallel blocks): {verdict} (max rel err {add['block']:.1e})")
    else:
        lines.append(
            f"resid_pre + attn_out = resid_mid, resid_mid + mlp_out = resid_post: {verdict} "
            f"(max rel err {add['attn']:.1e} / {add['mlp']:.1e})"
        )
    lines.append("(means exclude the BOS position)" if analysis.is_bos.any() else "")
    return "\n".join(lines)


def _json_ready(analysis) -> dict:
    out = {
        "model": analysis.model_name,
        "prompt": analysis.prompt,
        "tokens": analysis.tokens,
        "hook_names": analysis.hook_names,
        "targets": analysis.targets,
        "tau": analysis.tau,
        "k": analysis.k,
        "additivity": analysis.additivity,
        "info": analysis.info,
        "top_tokens": analysis.top_tokens.tolist(),
    }
    for name, arr in analysis.to_arrays().items():
        out[name] = np.asarray(arr).tolist()
    return out


def _progress_bar(delay: float = 0.5):
    """A stderr progress bar (shown after ``delay`` s) that ends its line when closed, so the table printed
    next never starts on the bar's line; no rate (it would read "%/s")."""
    from tqdm.auto import tqdm

    bar = tqdm(
        total=100, desc="analysing: ", delay=delay, file=sys.stderr, leave=True,
        bar_format="{desc}{percentage:3.0f}%|{bar}| {elapsed}",
    )

    def update(fraction: float, stage: str) -> None:
        # through update(), not n = ...; refresh(): tqdm then knows the bar was shown (after `delay`) and
        # close() ends its line; a bar it thinks was never shown is left without its newline
        bar.set_description(stage, refresh=False)
        bar.update(max(0, int(round(fraction * 100)) - bar.n))

    return bar, update


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="resid-widgets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="logit lens, projection % and norms of one prompt")
    a.add_argument("prompt")
    a.add_argument("--model", default=None, help="hub name (gpt2) or local HF directory; default: the embedded demo model")
    a.add_argument("--top-k", type=int, default=5)
    a.add_argument("--targets", nargs="*", default=None, help="single-token targets, e.g. ' Paris' ' London'")
    a.add_argument("--tau", type=float, default=0.9, help="energy threshold of the token subspace, in (0, 1]")
    a.add_argument(
        "--lens",
        default="logit",
        help="logit | jacobian | tuned (the demo model ships both; other models: a saved lens file's path with --lens-file)",
    )
    a.add_argument("--lens-file", default=None, help="a saved Jacobian or tuned lens for --model (resid_widgets or TransformerLens .pt)")
    a.add_argument("--positions", type=int, default=12, help="how many final positions the table shows")
    a.add_argument("--device", default=None)
    a.add_argument("--json", dest="json_path", default=None, help="write all arrays to this JSON file")
    args = parser.parse_args(argv)

    from resid_widgets.session import Session

    try:
        session = Session(args.model, device=args.device)
        if args.lens_file:
            session.load_lens(args.lens_file, kind=None if args.lens == "logit" else args.lens)
        bar, update = _progress_bar()
        try:
            analysis = session.analyze(
                args.prompt, top_k=args.top_k, targets=args.targets, tau=args.tau, lens=args.lens, progress=update
            )
        finally:
            bar.close()
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"resid-widgets: error: {exc}", file=sys.stderr)
        return 2
    print(format_lens_table(analysis, max_positions=args.positions))
    print()
    print(format_summary(analysis, top_k=args.top_k))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(_json_ready(analysis), fh)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
