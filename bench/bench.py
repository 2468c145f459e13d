"""Benchmark the analysis core against the model's forward pass and TransformerLens's logit lens.

    python bench/bench.py --json bench/results/cpu.json          # 16, 128, 512, 1024 tokens
    python bench/bench.py --quick --json /tmp/quick.json         # 16 and 128 tokens

A GPT-2-small-shaped model with random weights is built offline (12 layers, d_model 768, 12 heads,
d_mlp 3072, vocab 50257, context 1024). Every figure is the median of several repeats, and the
ratios compare figures from the same run (machines are shared and noisy):

  forward_s        the model's plain forward pass
  tl_logit_lens_s  transformer_lens.tools.analysis.logit_lens(top_k=10, every position)
  full_view_s      our first view: lens top-k + target ranks at every layer x position,
                   projection %, norms, payload encoded
  edit_update_s    after the full view, the last word replaced and the new payload produced
  payload_bytes    first view's payload (binary blob + JSON header)
  peak_rss_delta_mb  peak resident memory of a first full view, above the level before it, measured
                   in a fresh process (model booted, SVD done) so no earlier allocation hides it
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

GPT2_SMALL = dict(
    n_layers=12, d_model=768, d_head=64, n_heads=12, d_mlp=3072, n_ctx=1024, d_vocab=50257,
    act_fn="gelu_new", normalization_type="LN", seed=0,
)


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fresh_process_peak(n: int, device: str, queue) -> None:
    """Child process: boot, then one full view of n tokens; report max RSS growth in MB."""

    from transformer_lens.model_bridge.sources import native

    from resid_widgets import Session
    from resid_widgets.payload import encode_analysis

    torch.set_grad_enabled(False)
    model = native.boot(dict(GPT2_SMALL, device=device))
    model.eval()
    session = Session(model)
    session.subspace
    session.info()
    ids = np.random.default_rng(1).integers(0, GPT2_SMALL["d_vocab"], n)
    with PeakRSS() as mem:
        encode_analysis(session.analyze(ids, top_k=10, targets=[262, 11]))
    queue.put(mem.delta_mb)


def peak_rss_in_fresh_process(n: int, device: str) -> float:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_fresh_process_peak, args=(n, device, queue))
    proc.start()
    value = queue.get(timeout=600)
    proc.join()
    return float(value)


class PeakRSS:
    """Samples this process's resident memory in a thread (psutil), reporting the peak above start."""

    def __init__(self, interval: float = 0.005):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval

    def __enter__(self):
        gc.collect()
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.delta_mb = (self.peak - self.start) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 and 128 tokens only")
    parser.add_argument("--json", dest="json_path", required=True)
    parser.add_argument("--lengths", type=int, nargs="*", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    lengths = args.lengths or ([16, 128] if args.quick else [16, 128, 512, 1024])

    from transformer_lens.model_bridge.sources import native
    from transformer_lens.tools.analysis import logit_lens

    from resid_widgets import Session
    from resid_widgets.payload import encode_analysis

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    model = native.boot(dict(GPT2_SMALL, device=args.device))
    model.eval()
    boot_s = time.perf_counter() - t0
    session = Session(model)
    session.subspace  # the SVD is once per model, not per view
    rng = np.random.default_rng(0)
    targets = [262, 11]

    def full_view(ids):
        session._memo = None  # no reuse across repeats: a genuinely first view
        a = session.analyze(ids, top_k=10, targets=targets)
        return encode_analysis(a)

    results = []
    for n in lengths:
        ids = rng.integers(0, GPT2_SMALL["d_vocab"], n)
        edited = ids.copy()
        edited[-2:] = rng.integers(0, GPT2_SMALL["d_vocab"], 2)  # "replace the last word"
        tokens = torch.as_tensor(ids)[None].to(args.device)
        reps = args.repeats if n <= 512 else max(1, args.repeats - 1)
        full_view(ids)  # warm-up
        forward_s = median_time(lambda: model(tokens), reps + 2)
        tl_s = median_time(lambda: logit_lens(model, tokens, positions=None, top_k=10), reps)
        full_s = median_time(lambda: full_view(ids), reps)
        meta, blob = full_view(ids)
        payload_bytes = len(blob) + len(json.dumps(meta).encode())

        def edit():
            session._memo = None
            session.analyze(ids, top_k=10, targets=targets)
            t = time.perf_counter()
            a = session.analyze(edited, top_k=10, targets=targets)
            encode_analysis(a)
            return time.perf_counter() - t

        edit_s = statistics.median(edit() for _ in range(reps))
        peak_mb = peak_rss_in_fresh_process(n, args.device)
        cells = (GPT2_SMALL["n_layers"] + 1) * n
        row = {
            "tokens": n,
            "forward_s": forward_s,
            "tl_logit_lens_s": tl_s,
            "full_view_s": full_s,
            "edit_update_s": edit_s,
            "payload_bytes": payload_bytes,
            "peak_rss_delta_mb": peak_mb,
            "ratios": {
                "full_view_over_forward": full_s / forward_s,
                "tl_logit_lens_over_full_view": tl_s / full_s,
                "edit_update_over_full_view": edit_s / full_s,
                "payload_bytes_per_cell": payload_bytes / cells,
            },
        }
        results.append(row)
        r = row["ratios"]
        print(
            f"{n:5d} tokens: forward {forward_s:.3f}s  TL lens {tl_s:.3f}s  full view {full_s:.3f}s  edit {edit_s:.3f}s  "
            f"| full/fwd {r['full_view_over_forward']:.2f}  TL/full {r['tl_logit_lens_over_full_view']:.2f}  "
            f"edit/full {r['edit_update_over_full_view']:.2f}  {r['payload_bytes_per_cell']:.1f} B/cell  "
            f"peak +{peak_mb:.0f} MB",
            flush=True,
        )

    from importlib.metadata import version

    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": args.device,
            "torch": torch.__version__,
            "transformer_lens": version("transformer-lens"),
        },
        "model": GPT2_SMALL,
        "boot_s": boot_s,
        "results": results,
    }
    Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json_path).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
