// The full top-k list of one cell, for the hover tooltip and the pinned panel: from the payload's
// own arrays (static export), from the details cache, or by a lazy details request. `run` "after":
// the steering panel's steered run (`d` is then the after payload; its `after_seq` names it to Python). Hover requests
// wait for the pointer to rest (`dwellMs`, superseded by the next hover); the pinned panel asks now.

import type { LensData } from "./codecs";
import type { DetailsRun } from "./contract.gen";
import { DetailsClient, StaleError } from "./rpc";
import type { TopK } from "./tooltip";

export const HOVER_DWELL_MS = 60;

export class TopKSource {
  private dwell: ReturnType<typeof setTimeout> | null = null;
  private readonly errors = new Map<string, string>();

  constructor(
    private readonly details: DetailsClient,
    private readonly isStatic: () => boolean,
  ) {}

  get(d: LensData, row: number, pos: number, dwellMs: number, onReady: () => void, run: DetailsRun = "plain"): TopK {
    if (d.topIds && d.topProbs && d.topK) {
      const o = (row * d.T + pos) * d.topK;
      return {
        state: "ok",
        ids: Array.from(d.topIds.subarray(o, o + d.topK)),
        probs: Array.from(d.topProbs.subarray(o, o + d.topK)),
        strings: d.strings,
      };
    }
    if (this.isStatic()) return { state: "error", message: "not included in this export" };
    const seq = d.meta.seq;
    const afterSeq = run === "after" ? Number((d.meta as unknown as { after_seq?: number }).after_seq ?? 0) : 0;
    const key = `${seq}:${run}${afterSeq}:${pos}`;
    const hit = this.details.cached(seq, pos, run, afterSeq);
    if (hit) return { state: "ok", ids: hit.topIds[row] ?? [], probs: hit.topProbs[row] ?? [], strings: hit.strings };
    const err = this.errors.get(key);
    if (err) return { state: "error", message: err };
    const ask = () =>
      this.details.request(seq, pos, run, afterSeq).then(
        () => onReady(),
        (e: Error) => {
          if (e instanceof StaleError) return;
          this.errors.set(key, e.message);
          onReady();
          setTimeout(() => this.errors.delete(key), 1000); // a later hover retries (timeouts may be transient)
        },
      );
    if (dwellMs <= 0) void ask();
    else {
      this.cancel();
      this.dwell = setTimeout(() => {
        this.dwell = null;
        void ask();
      }, dwellMs);
    }
    return { state: "loading" };
  }

  cancel(): void {
    if (this.dwell !== null) clearTimeout(this.dwell);
    this.dwell = null;
  }
}
