// Lazy "details" requests for the hover tooltip's full top-k (one request per position: all rows).
//
//   JS -> Python  {type: "details", req, seq, pos}   req = "<view id>:<n>", unique across views
//   Python -> JS  {type: "details", req, seq, pos, top_ids: number[R][k], top_probs: number[R][k],
//                  strings: {id: text}}            or {type: "details", req, error: str}
//
// Replies are cached per (seq, pos); a reply for a seq other than the current payload's is ignored;
// a request with no reply after `timeoutMs` rejects (the tooltip says so) and may be retried later.

export interface Details {
  seq: number;
  pos: number;
  topIds: number[][]; // [R][k]
  topProbs: number[][]; // [R][k]
  strings: Map<number, string>;
}

interface Pending {
  key: string;
  seq: number;
  pos: number;
  resolve: (d: Details) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class StaleError extends Error {}

export class DetailsClient {
  private nextReq = 1;
  private seq = -1;
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

  cached(seq: number, pos: number): Details | undefined {
    return this.cache.get(`${seq}:${pos}`);
  }

  request(seq: number, pos: number): Promise<Details> {
    const key = `${seq}:${pos}`;
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
      this.pending.set(req, { key, seq, pos, resolve, reject, timer });
    });
    this.inflight.set(key, promise);
    try {
      this.send({ type: "details", req, seq, pos });
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
    const strings = new Map<number, string>();
    for (const [k, v] of Object.entries((m.strings as Record<string, string>) ?? {})) strings.set(Number(k), String(v));
    const d: Details = {
      seq: p.seq,
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
