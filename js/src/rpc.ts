// Lazy "details" requests for the hover tooltip's full top-k (one request per position: all rows).
//
//   JS -> Python  {type: "details", req, seq, pos, run?, after_seq?}   req = "<view id>:<n>", unique across views
//   Python -> JS  {type: "details", req, seq, pos, top_ids: number[R][k], top_probs: number[R][k],
//                  strings: {id: text}, run?, after_seq?}            or {type: "details", req, error: str}
//
// run "after" asks about the steering panel's steered run: the after payload `after_seq` paired with payload `seq`.
// Replies are cached per (seq, run, after_seq, pos); a reply for a seq (or after payload) other than the current one is ignored;
// a request with no reply after `timeoutMs` rejects (the tooltip says so) and may be retried later.

import type { DetailsRun } from "./contract.gen";

export interface Details {
  seq: number;
  run: DetailsRun;
  pos: number;
  topIds: number[][]; // [R][k]
  topProbs: number[][]; // [R][k]
  strings: Map<number, string>;
}

interface Pending {
  key: string;
  seq: number;
  run: DetailsRun;
  afterSeq: number;
  pos: number;
  resolve: (d: Details) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class StaleError extends Error {}

const keyOf = (seq: number, pos: number, run: DetailsRun, afterSeq: number) => (run === "after" ? `${seq}:after${afterSeq}:${pos}` : `${seq}:${pos}`);

export class DetailsClient {
  private nextReq = 1;
  private seq = -1;
  private afterSeq = -1;
  private cache = new Map<string, Details>();
  private inflight = new Map<string, Promise<Details>>();
  private pending = new Map<string, Pending>();

  /** `prefix`: this view's id. Replies go to every view of the widget, so request ids must not
   *  collide between views. */
  constructor(
    private readonly send: (msg: Record<string, unknown>) => void,
    readonly timeoutMs = 10_000,
    private readonly prefix = "",
  ) {}

  /** A new payload arrived: forget everything about older ones. */
  setSeq(seq: number): void {
    if (seq === this.seq) return;
    this.seq = seq;
    this.cache.clear();
    this.inflight.clear();
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new StaleError("payload changed"));
    }
    this.pending.clear();
  }

  /** A new after payload (the steering panel's, `_steer_meta.after_seq`; 0: none): forget the older one's lists. */
  setAfterSeq(afterSeq: number): void {
    if (afterSeq === this.afterSeq) return;
    this.afterSeq = afterSeq;
    for (const k of [...this.cache.keys()]) if (k.includes(":after")) this.cache.delete(k);
    for (const [req, p] of [...this.pending]) {
      if (p.run !== "after") continue;
      this.finish(req, p);
      p.reject(new StaleError("steered payload changed"));
    }
  }

  cached(seq: number, pos: number, run: DetailsRun = "plain", afterSeq = 0): Details | undefined {
    return this.cache.get(keyOf(seq, pos, run, afterSeq));
  }

  request(seq: number, pos: number, run: DetailsRun = "plain", afterSeq = 0): Promise<Details> {
    const key = keyOf(seq, pos, run, afterSeq);
    const hit = this.cache.get(key);
    if (hit) return Promise.resolve(hit);
    const running = this.inflight.get(key);
    if (running) return running;
    const req = `${this.prefix}:${this.nextReq++}`;
    const promise = new Promise<Details>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        this.inflight.delete(key);
        reject(new Error(`no reply from Python after ${Math.round(this.timeoutMs / 1000)} s`));
      }, this.timeoutMs);
      this.pending.set(req, { key, seq, run, afterSeq, pos, resolve, reject, timer });
    });
    this.inflight.set(key, promise);
    try {
      this.send({ type: "details", req, seq, pos, ...(run === "after" ? { run, after_seq: afterSeq } : {}) });
    } catch (e) {
      const p = this.pending.get(req);
      if (p) {
        clearTimeout(p.timer);
        this.pending.delete(req);
        this.inflight.delete(key);
        p.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    return promise;
  }

  /** Feed a custom message; returns true when it was a details reply (handled or ignored). */
  handle(msg: unknown): boolean {
    const m = msg as Record<string, unknown> | null;
    if (!m || typeof m !== "object" || m.type !== "details") return false;
    const req = String(m.req);
    const p = this.pending.get(req);
    if (!p) return true; // another view's, unknown, timed out or superseded: ignore
    if (m.pos !== undefined && Number(m.pos) !== p.pos) return true;
    if (typeof m.error === "string" && m.error) {
      this.finish(req, p);
      p.reject(new Error(m.error));
      return true;
    }
    if (m.seq !== undefined && Number(m.seq) !== p.seq) return true; // reply for an old payload
    if (p.seq !== this.seq) return true;
    if ((m.run ?? "plain") !== p.run || (p.run === "after" && Number(m.after_seq) !== p.afterSeq)) return true; // another run's list
    const strings = new Map<number, string>();
    for (const [k, v] of Object.entries((m.strings as Record<string, string>) ?? {})) strings.set(Number(k), String(v));
    const d: Details = {
      seq: p.seq,
      run: p.run,
      pos: p.pos,
      topIds: (m.top_ids as number[][]) ?? [],
      topProbs: (m.top_probs as number[][]) ?? [],
      strings,
    };
    this.finish(req, p);
    this.cache.set(p.key, d);
    p.resolve(d);
    return true;
  }

  private finish(req: string, p: Pending): void {
    clearTimeout(p.timer);
    this.pending.delete(req);
    this.inflight.delete(p.key);
  }

  dispose(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.inflight.clear();
    this.cache.clear();
  }
}
