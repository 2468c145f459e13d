"""``resid-widgets attribute``: direct logit attribution of one prompt from a terminal.

    resid-widgets attribute "Mr. and Mrs." --target " Bennet" --counterfactual " Darcy" --json dla.json

Prints the top writers at one position (default: the last) and writes, with ``--json``, every writer's
attribution at every position: ``labels`` [W] (TransformerLens's labels), ``dla`` [W, positions],
``token_ids`` [positions], and the terms that close the sum (``constant``, ``lens_value``, ``scale``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attribute", help="direct logit attribution of every head, MLP and embedding to a target token")
    p.add_argument("prompt")
    p.add_argument("--model", default=None, help="hub name (gpt2) or local HF directory; default: the embedded demo model")
    p.add_argument("--target", required=True, help="one token, e.g. ' Paris' (or 'top1': the lens's top-1 at each position)")
    p.add_argument("--counterfactual", default=None, help="one token: attribute target − counterfactual")
    p.add_argument("--row", type=int, default=None, help="residual row read out (0 = embeddings; default: the output)")
    p.add_argument("--position", type=int, default=-1, help="the position whose top writers are printed (default: the last)")
    p.add_argument("--top-k", type=int, default=10, help="how many writers to print")
    p.add_argument("--device", default=None)
    p.add_argument("--json", dest="json_path", default=None, help="write labels, dla [W, positions] and token_ids to this file")


def _target(value: str):
    return int(value[1:]) if value.startswith("#") and value[1:].isdigit() else value


def run(args: argparse.Namespace) -> int:
    from resid_widgets.session import Session
    from resid_widgets.session.attribution import AttributionRun

    try:
        session = Session(args.model, device=args.device)
        run_ = AttributionRun(session, args.prompt)
        att = run_.dla(_target(args.target), None if args.counterfactual is None else _target(args.counterfactual), row=args.row)
        (pos,) = att.positions[[_index(args.position, len(att.positions))]]
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"resid-widgets: error: {exc}", file=sys.stderr)
        return 2
    print(format_attribution(att, session, int(pos), top_k=args.top_k))
    if args.json_path:
        _write_json(args.json_path, _json_ready(att, session, args))
        print(f"wrote {args.json_path}")
    return 0


def _index(position: int, n: int) -> int:
    if not -n <= position < n:
        raise ValueError(f"position {position} is out of range: the prompt has {n} positions (0..{n - 1})")
    return position % n


def format_attribution(att, session, pos: int, *, top_k: int) -> str:
    strings = session.token_strings(np.concatenate([att.token_ids, att.target_ids, [] if att.counterfactual_ids is None else att.counterfactual_ids]).astype(int))
    what = repr(strings[int(att.target_ids[pos])])
    if att.counterfactual_ids is not None:
        what += f" − {strings[int(att.counterfactual_ids[pos])]!r}"
    col = att.values[:, pos]
    order = np.argsort(-np.abs(col), kind="stable")[:top_k]
    order = order[np.argsort(-col[order], kind="stable")]
    lines = [
        f"model: {session.name}    tokens: {len(att.token_ids)}    row: {att.row}    position: {pos} ({strings[int(att.token_ids[pos])]!r})",
        f"direct logit attribution to {what} (pre-cap logits, final norm scale frozen at {att.scale[pos]:.4g})",
        f"{'writer':>12} {'dla':>10}",
    ]
    lines += [f"{att.labels[i]:>12} {col[i]:10.4f}" for i in order]
    lines.append(
        f"sum of {len(att.labels)} writers {col.sum():.4f} + constant {att.constant[pos]:.4f} = {col.sum() + att.constant[pos]:.4f}; "
        f"lens {att.lens_value[pos]:.4f} (max rel err over positions {att.checks['logit']:.1e})"
    )
    return "\n".join(lines)


def _json_ready(att, session, args) -> dict:
    return {
        "model": session.name,
        "prompt": args.prompt,
        "token_ids": att.token_ids.tolist(),
        "tokens": [session.token_strings([i])[int(i)] for i in att.token_ids],
        "row": att.row,
        "labels": att.labels,
        "dla": att.values.tolist(),
        "target_ids": att.target_ids.tolist(),
        "counterfactual_ids": None if att.counterfactual_ids is None else att.counterfactual_ids.tolist(),
        "scale": att.scale.tolist(),
        "constant": att.constant.tolist(),
        "lens_value": att.lens_value.tolist(),
        "layer_dla": att.layer_values.tolist(),
        "kv_group": att.kv_group.tolist(),
        "checks": att.checks,
    }


def _write_json(path: str, data: dict) -> None:
    """Write to a temporary file next to ``path``, then rename: a failed run never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


__all__ = ["add_parser", "run"]
