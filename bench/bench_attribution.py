"""Benchmark direct logit attribution against one forward pass, on bench.py's model (random GPT-2 small).

    python bench/bench_attribution.py --json bench/results/attribution-cpu-2core.json [--lengths 128 1024]

Per length and round (median over rounds; each ratio is the median of its per-round ratios):

  forward_s        the model's plain forward pass (the faster of two)
  per_head_dla_s   ``AttributionRun(session, ids)`` (one forward pass with the attribution hooks) + ``run.dla(target,
                   counterfactual)`` at *every* position: 144 heads, 12 MLPs, embeddings, bias (goal ≤ 1.5× forward)
  neurons_s        the same run recording neurons at the last position + ``run.neurons(...)`` there (36,864 neurons)
  held_mb          what the run keeps (z, attn_out, mlp_out, residual rows, scales) against the [L, H, T, d_model]
                   head results that a d_model-space stack would hold (``stack_mb``)
  panel_cold_s     ResidWidget's Writers panel, one cell after the analysis is complete, as its message handler
                   computes it (``WritersSource.reply``, comm transport excluded): the first cell of a prompt,
                   including the AttributionRun forward pass (also as a ratio to the forward pass)
  panel_warm_s     another cell of the same prompt (goal <= 0.1 s, issue 21)
  panel_cell_bytes the reply for one cell: its JSON (labels excluded: sent once per view) + the float32 buffer
                   (goal <= 8 KB); panel_labels_bytes: the labels, once; panel_writer_bytes: one writer at every
                   position (fetched on demand)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench import MODEL_DIR, build_model_dir, timeit, write_json  # noqa: E402  (bench/bench.py: the same model)

GOAL = 1.5  # per-head DLA at every position / one forward pass (issue 21)
PANEL_GOAL_S, PANEL_GOAL_BYTES = 0.1, 8 * 1024  # the Writers panel: one cell, warm; bytes per cell
TARGET, CF = 262, 11


def _held_bytes(writers) -> int:
    tensors = [writers.embed, writers.resid, writers.row_scale, *writers.z, *writers.attn_out, *(writers.mlp_out or [])]
    tensors += [t for t in (writers.pos_embed, writers.model_scale) if t is not None]
    tensors += list(writers.neuron_acts.values())
    return sum(t.numel() * t.element_size() for t in tensors)


def measure(session, n: int, rng, rounds: int) -> dict:
    from resid_widgets.session.attribution import AttributionRun

    ids = rng.integers(0, session.d_vocab - 1, n)
    tokens = torch.as_tensor(ids)[None].to(session.device)
    per_round = []
    held = 0
    for _ in range(rounds):
        fwd = min(timeit(lambda: session.model(tokens)), timeit(lambda: session.model(tokens)))
        box = {}

        def per_head():
            run = AttributionRun(session, ids)
            box["att"] = run.dla(TARGET, CF)
            box["run"] = run

        t_dla = timeit(per_head)
        held = _held_bytes(box["run"].writers)
        assert box["att"].values.shape[1] == n and box["att"].checks["holds"], box["att"].checks
        box.clear()

        def neurons():
            run = AttributionRun(session, ids, neuron_positions=[-1])
            box["n"] = run.neurons(TARGET, CF, positions=-1)

        t_neurons = timeit(neurons)
        assert box["n"].error <= 1e-4
        per_round.append({"forward_s": fwd, "per_head_dla_s": t_dla, "neurons_s": t_neurons})
    L, H, d = session.n_layers, session.model.cfg.n_heads, session.d_model
    med = {k: float(np.median([r[k] for r in per_round])) for k in per_round[0]}
    ratio = float(np.median([r["per_head_dla_s"] / r["forward_s"] for r in per_round]))
    return {
        "tokens": n,
        **med,
        "per_head_dla_over_forward": ratio,
        "best_round_ratio": float(min(r["per_head_dla_s"] for r in per_round) / min(r["forward_s"] for r in per_round)),
        "neurons_over_forward": float(np.median([r["neurons_s"] / r["forward_s"] for r in per_round])),
        "goal_met": ratio <= GOAL,
        "held_mb": held / 2**20,
        "stack_mb": L * H * n * d * 4 / 2**20,
        "rounds": per_round,
    }


def measure_panel(session, n: int, rng, forward_s: float) -> dict:
    """The Writers panel's latency and bytes for one cell of an n-token prompt (see the module docstring)."""
    from types import SimpleNamespace

    from resid_widgets.payload.contract import WritersAsk
    from resid_widgets.widgets.resid_writers import WritersSource

    ids = rng.integers(0, session.d_vocab - 1, n)
    analysis = SimpleNamespace(token_ids=ids, target_ids=[TARGET, CF], targets=[f"#{TARGET}", f"#{CF}"])
    source = WritersSource(session)
    L = session.n_layers
    t0 = time.perf_counter()
    source.reply(analysis, 1, WritersAsk(req="b:1", seq=1, row=L, pos=n - 1, labels=True))
    cold = time.perf_counter() - t0
    warm = []
    for i in range(9):  # other cells: three rows, three positions each
        t0 = time.perf_counter()
        content, buffers = source.reply(analysis, 1, WritersAsk(req="b:2", seq=1, row=L - 1 - i % 3, pos=(n * (i + 1)) // 11))
        warm.append(time.perf_counter() - t0)
    first, _ = source.reply(analysis, 1, WritersAsk(req="b:3", seq=1, row=L, pos=n - 1, labels=True))
    _, writer = source.reply(analysis, 1, WritersAsk(req="b:4", seq=1, row=L, pos=n - 1, writer=3))
    source.close()
    cell_bytes = len(json.dumps(content)) + len(buffers[0])
    return {
        "panel_cold_s": cold,
        "panel_cold_over_forward": cold / forward_s,
        "panel_warm_s": float(np.median(warm)),
        "panel_warm_goal_met": float(np.median(warm)) <= PANEL_GOAL_S,
        "panel_warm_all_s": warm,
        "panel_cell_bytes": cell_bytes,
        "panel_cell_buffer_bytes": len(buffers[0]),
        "panel_bytes_goal_met": cell_bytes <= PANEL_GOAL_BYTES,
        "panel_labels_bytes": len(json.dumps(first["labels"])),
        "panel_writer_bytes": len(writer[0]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", dest="json_path", required=True)
    parser.add_argument("--lengths", type=int, nargs="*", default=[128, 1024])
    parser.add_argument("--rounds", type=int, default=2, help="0: the Writers panel's figures only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)

    from importlib.metadata import version

    from resid_widgets import Session

    torch.set_grad_enabled(False)
    load_before = [round(x, 2) for x in os.getloadavg()]
    session = Session(str(build_model_dir(args.model_dir)), device=args.device)
    rng = np.random.default_rng(0)
    rows = []
    for n in args.lengths:
        row = measure(session, n, rng, args.rounds) if args.rounds else {"tokens": n}
        fwd = row.get("forward_s") or min(timeit(lambda: session.model(torch.as_tensor(rng.integers(0, 1000, n))[None])) for _ in range(2))
        row.update(measure_panel(session, n, rng, fwd))
        rows.append(row)
        print(
            f"{n:5d} tokens: Writers panel cold {row['panel_cold_s']:.3f}s ({row['panel_cold_over_forward']:.2f}x forward), "
            f"warm {row['panel_warm_s'] * 1000:.1f} ms (goal <= {PANEL_GOAL_S} s: {'met' if row['panel_warm_goal_met'] else 'NOT met'}), "
            f"{row['panel_cell_bytes']} B per cell ({row['panel_cell_buffer_bytes']} B float32), labels once "
            f"{row['panel_labels_bytes']} B, one writer at every position {row['panel_writer_bytes']} B",
            flush=True,
        )
        if not args.rounds:
            continue
        print(
            f"{n:5d} tokens: forward {row['forward_s']:.3f}s  per-head DLA {row['per_head_dla_s']:.3f}s "
            f"({row['per_head_dla_over_forward']:.2f}x, goal <= {GOAL}: {'met' if row['goal_met'] else 'NOT met'})  "
            f"neurons {row['neurons_s']:.3f}s ({row['neurons_over_forward']:.2f}x)  held {row['held_mb']:.0f} MB "
            f"vs a d_model head stack {row['stack_mb']:.0f} MB",
            flush=True,
        )
    out = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "transformer_lens": version("transformer-lens"),
            "device": args.device,
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
        },
        "goal_per_head_dla_over_forward": GOAL,
        "results": rows,
    }
    write_json(args.json_path, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
