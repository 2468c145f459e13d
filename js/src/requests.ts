// Keyed requests to Python over the widget's custom messages: the machinery shared by the tooltip's
// lazy top-k `details` (rpc.ts) and the Writers panel's `writers` (writers.ts). Each client keeps its
// own message fields and its own decoding of a reply; this part does the rest:
//
//   request ids     "<view id>:<tag><n>", n = 1, 2, … per client: replies reach every view of the widget,
//                   so ids never collide between views (nor between two clients of one view, by `tag`)
//   one per key     a key asked again while its request is open gets the same promise; an answered key
//                   comes from the cache (per payload `seq`)
//   timeout         no reply after `timeoutMs` rejects ("no reply from Python after 10 s"); a reply that
//                   comes later is ignored, and the key may be asked again
//   stale           `setSeq` (a new payload shown) forgets the cache and rejects every open request with
//                   `StaleError` (callers stay quiet on it); a reply whose `seq` is not the request's is
//                   ignored; one for a request of a payload no longer shown rejects with `StaleError`
//   errors          `{type, req, error}` rejects with that message; a send that throws rejects at once

export class StaleError extends Error {}

export type Msg = Record<string, unknown>;
type Send = (msg: Msg) => void;

interface Pending<T, I> {
  key: string;
  seq: number;
  info: I; // what the client needs to decode the reply
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** `T`: an answer (cached per key); `I`: what a client keeps of each open request to decode its reply. */
export class Requests<T, I = undefined> {
  private nextReq = 1;
  private seq = -1;
  private readonly cache = new Map<string, T>();
  private readonly inflight = new Map<string, Promise<T>>();
  private readonly pending = new Map<string, Pending<T, I>>();

  /** `type`: the message type (asked and answered); `prefix`: this view's id; `tag`: before n in the id. */
  constructor(
    private readonly send: Send,
    private readonly type: string,
    readonly timeoutMs: number,
    private readonly prefix: string,
    private readonly tag = "",
  ) {}

  /** A new payload is shown: forget everything about older ones. */
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

  /** Forget the answers and open requests whose key `drop` names (these reject with `StaleError(why)`). */
  forget(drop: (key: string) => boolean, why: string): void {
    for (const k of [...this.cache.keys()]) if (drop(k)) this.cache.delete(k);
    for (const [req, p] of [...this.pending]) if (drop(p.key)) this.finish(req, p).reject(new StaleError(why));
  }

  cached(key: string): T | undefined {
    return this.cache.get(key);
  }

  /** The answer for `key`: cached, the open request's, or a new request `{type, req, ...fields}` for payload `seq`. */
  ask(key: string, seq: number, info: I, fields: Msg): Promise<T> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return Promise.resolve(hit);
    const running = this.inflight.get(key);
    if (running) return running;
    const req = `${this.prefix}:${this.tag}${this.nextReq++}`;
    const promise = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        this.inflight.delete(key);
        reject(new Error(`no reply from Python after ${Math.round(this.timeoutMs / 1000)} s`));
      }, this.timeoutMs);
      this.pending.set(req, { key, seq, info, resolve, reject, timer });
    });
    this.inflight.set(key, promise);
    try {
      this.send({ type: this.type, req, seq, ...fields });
    } catch (e) {
      const p = this.pending.get(req);
      if (p) this.finish(req, p).reject(e instanceof Error ? e : new Error(String(e)));
    }
    return promise;
  }

  /** Feed a custom message; true when it was of this client's type (answered, rejected or ignored).
   *  `decode` turns a good reply into the answer, or `undefined` when it is not this request's (ignored). */
  handle(msg: unknown, decode: (m: Msg, info: I, seq: number) => T | undefined): boolean {
    const m = msg as Msg | null;
    if (!m || typeof m !== "object" || m.type !== this.type) return false;
    const req = String(m.req);
    const p = this.pending.get(req);
    if (!p) return true; // another view's, unknown, timed out or superseded
    if (m.seq !== undefined && Number(m.seq) !== p.seq) return true; // for another payload
    if (typeof m.error === "string" && m.error) {
      this.finish(req, p).reject(new Error(m.error));
      return true;
    }
    if (p.seq !== this.seq) {
      this.finish(req, p).reject(new StaleError("payload changed"));
      return true;
    }
    const value = decode(m, p.info, p.seq);
    if (value === undefined) return true;
    this.finish(req, p);
    this.cache.set(p.key, value);
    p.resolve(value);
    return true;
  }

  private finish(req: string, p: Pending<T, I>): Pending<T, I> {
    clearTimeout(p.timer);
    this.pending.delete(req);
    this.inflight.delete(p.key);
    return p;
  }

  dispose(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.inflight.clear();
    this.cache.clear();
  }
}
