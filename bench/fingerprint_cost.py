"""What keying the caches on the weights' bytes costs, next to one forward pass; and Analysis.nbytes.

    python bench/fingerprint_cost.py [--json bench/results/fingerprint-cpu-2core.json]

On the bench model (random GPT-2 small, bench/bench.py): ``Session._params_key()`` (every parameter's
storage fingerprinted, see resid_widgets/session/fingerprint.py) against the model's plain forward pass
at 16, 128 and 1,024 tokens, interleaved, the fastest of 5 (3 at 1,024), in wall time and in process CPU
time (steadier on a shared machine); and the bytes one Analysis
of 1,000 tokens holds (``Analysis.nbytes``) with the process's RSS growth while it is built.
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import bench  # noqa: F401  (sets sys.path and the offline flags)
import psutil
import torch


def best(fn, n):
    """(wall seconds, process CPU seconds) of the fastest of n runs."""
    out = []
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from resid_widgets import Session

    s = Session(str(bench.build_model_dir() if not (bench.MODEL_DIR / "config.json").is_file() else bench.MODEL_DIR), device="cpu")
    nbytes = sum(st.nbytes() for st in {p.untyped_storage().data_ptr(): p.untyped_storage() for p in s.model.parameters()}.values())
    ids = torch.randint(0, s.d_vocab, (1, 1024), generator=torch.Generator().manual_seed(0))
    rows = []
    for T in (16, 128, 1024):
        n = 3 if T >= 1024 else 5
        fwd, fp = [], []
        for _ in range(n):  # interleaved: the machine's load hits both alike
            with torch.inference_mode():
                fwd.append(best(lambda: s.model(ids[:, :T]), 1))
            fp.append(best(s._params_key, 1))
        (fw, fc), (pw, pc) = min(fwd), min(fp)
        # on a shared machine the CPU-time ratio is the steadier one (wall time waits for other jobs)
        rows.append({"tokens": T, "forward_s": fw, "fingerprint_s": pw, "ratio": pw / fw,
                     "forward_cpu_s": fc, "fingerprint_cpu_s": pc, "cpu_ratio": pc / fc})
        print(rows[-1], flush=True)
    gc.collect()
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    a = s.analyze(ids[0, :1000].tolist(), top_k=10, targets=[262, 11])
    gc.collect()
    grown = proc.memory_info().rss - rss0
    out = {"weights_bytes": nbytes, "fingerprint": rows, "analysis_1000_tokens_nbytes": a.nbytes,
           "analysis_rss_growth_bytes": grown, "torch_threads": torch.get_num_threads()}
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
