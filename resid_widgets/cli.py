"""``resid-widgets``: the analyses from a terminal.

    resid-widgets analyze "Mr. and Mrs." --top-k 5 --targets " Bennet" " Darcy"
    resid-widgets analyze "The capital of France is" --model gpt2 --json lens.json
"""

from __future__ import annotations

import argparse
import json
import os
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
    lacking = (analysis.info.get("lacks") or {}).get("sublayers")
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
        attn = "" if r == 0 else "n/a" if lacking else f"{analysis.attn_norm[r - 1][keep].mean():9.2f}"
        mlp = "" if r == 0 else "n/a" if lacking else f"{analysis.mlp_norm[r - 1][keep].mean():9.2f}"
        kl = analysis.kl[r][keep].mean() if keep.any() else analysis.kl[r].mean()
        row = f"{label:>6} {mean:11.2f} {pct[last]:11.2f} {analysis.resid_norm[r][keep].mean():9.2f} {attn:>9} {mlp:>9} {kl:8.3f}"
        row += "".join(f" {int(analysis.target_ranks[r, last, j]):14d}" for j in range(len(analysis.targets)))
        lines.append(row)
    lines.append(f"ln_final.hook_normalized projection % at the last position: {analysis.projection_final_pct[last]:.2f}")
    add = analysis.additivity
    if lacking:  # a backend without the sublayer outputs (a driver capturing blocks.{l}.hook_out only)
        lines.append(f"|attn|, |mlp| and the additivity check: unavailable ({lacking})")
        lines.append("(means exclude the BOS position)" if analysis.is_bos.any() else "")
        return "\n".join(lines)
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
    from resid_widgets.payload.protocol import METRIC_SPECS

    lacks = analysis.info.get("lacks") or {}  # a backend's missing needs: their metrics' arrays are left out
    hidden = {s["array"]: lacks[s["needs"]] for s in METRIC_SPECS.values() if s["needs"] in lacks}
    for name, arr in analysis.to_arrays().items():
        if name in hidden:
            out.setdefault("unavailable", {})[name] = hidden[name]  # not NaN written as numbers
            continue
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
        default=None,
        help="logit (default) | jacobian | tuned (the demo model ships both; other models: a lens file with --lens-file)",
    )
    a.add_argument("--lens-file", default=None, help="a Jacobian or tuned lens for --model: ours (.safetensors), a "
                   "TransformerLens .pt artifact or a tuned-lens directory; --lens, when given, must match it")
    a.add_argument("--positions", type=int, default=12, help="how many final positions the table shows")
    a.add_argument("--device", default=None)
    a.add_argument("--json", dest="json_path", default=None, help="write all arrays to this JSON file")
    from resid_widgets import cli_attribute

    cli_attribute.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "attribute":
        return cli_attribute.run(args)

    from resid_widgets.session import Session

    try:
        _check_args(args)  # before the model loads: bad options cost nothing
        try:
            session = Session(args.model, device=args.device)
        except OSError as exc:  # hub unreachable, no such hub model, unreadable directory
            raise OSError(f"cannot load the model {args.model or 'demo'!r}: {_one_line(exc)}") from exc
        lens = args.lens or "logit"
        if args.lens_file:  # without --lens, the file says which lens it holds
            lens = session.load_lens(args.lens_file, kind=args.lens).kind
        bar, update = _progress_bar()
        try:
            analysis = session.analyze(
                args.prompt, top_k=args.top_k, targets=args.targets, tau=args.tau, lens=lens, progress=update
            )
        finally:
            bar.close()
    except KeyboardInterrupt:
        print("resid-widgets: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        print(f"resid-widgets: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    print(format_lens_table(analysis, max_positions=args.positions))
    print()
    print(format_summary(analysis, top_k=args.top_k))
    if args.json_path:
        try:
            write_json_atomic(args.json_path, _json_ready(analysis))
        except (OSError, KeyboardInterrupt) as exc:
            print(f"resid-widgets: error: could not write {args.json_path}: {_one_line(exc) or 'interrupted'}", file=sys.stderr)
            return 2
        print(f"wrote {args.json_path}")
    return 0


# ---- checking options and writing files (issue 20: one-line errors, atomic --json) ----------------------
def _check_args(args) -> None:
    """Options that can be checked without the model: positions, device, the model path, the --json path."""
    if args.positions < 1:
        raise ValueError(f"--positions must be at least 1, got {args.positions}")
    from resid_widgets.payload.protocol import TRAITS

    limit = int(TRAITS["top_k"]["max"])  # Session.analyze's limit too (session.MAX_TOP_K)
    if not 1 <= args.top_k <= limit:
        raise ValueError(f"--top-k must be between 1 and {limit}, got {args.top_k}")
    if args.device is not None:
        _check_device(args.device)
    if args.model is not None:
        model = os.path.expanduser(args.model)
        if os.path.isfile(model):
            raise ValueError(f"--model {args.model} is a file; give a Hugging Face model directory or a hub name such as gpt2")
        looks_local = model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep == "\\" and "\\" in model
        if looks_local and not os.path.isdir(model):
            raise FileNotFoundError(f"--model {args.model}: no such directory")
    if args.lens_file and args.lens == "logit":
        raise ValueError("--lens logit reads no lens file; drop --lens-file, or say --lens jacobian / tuned")
    if args.lens_file and args.lens not in (None, "jacobian", "tuned"):
        raise ValueError(f"unknown lens {args.lens!r}; with --lens-file choose jacobian or tuned")
    if args.lens_file and not os.path.exists(args.lens_file):
        raise FileNotFoundError(f"--lens-file {args.lens_file}: no such file or directory")
    if args.json_path:
        check_writable(args.json_path)


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"--device {device!r} is not a device (cpu, cuda, cuda:1, mps): {_one_line(exc)}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {device}: MPS is not available on this machine")


def check_writable(path: str) -> None:
    """Fail now, not after the analysis, when ``path`` cannot be written."""
    target = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(target)
    if os.path.isdir(target):
        raise IsADirectoryError(f"--json {path} is a directory")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--json {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
        raise PermissionError(f"--json {path}: not writable")


def write_json_atomic(path: str, data: dict) -> None:
    """Write to a temporary file beside ``path`` and rename it over ``path``: a reader (or a kill at any
    moment) sees the old file or the new one, never a partial one. SIGTERM is turned into an exception
    while writing, so the temporary file is removed; after SIGKILL a ``.<name>.*.tmp`` file may remain."""
    import signal
    import tempfile

    target = os.path.abspath(os.path.expanduser(path))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    previous = _raise_on_sigterm(signal)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.exists(target):
            os.chmod(tmp, os.stat(target).st_mode & 0o777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm(signal):
    def handler(signum, frame):
        raise KeyboardInterrupt("terminated")

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 500 else text[:499] + "…"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
