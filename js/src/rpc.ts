// Lazy "details" requests for the hover tooltip's full top-k (one request per position: all rows).
//
//   JS -> Python  {type: "details", req, seq, pos, run?, after_seq?}   req = "<view id>:<n>", unique across views
//   Python -> JS  {type: "details", req, seq, pos, top_ids: number[R][k], top_probs: number[R][k],
//                  strings: {id: text}, run?, after_seq?}            or {type: "details", req, error: str}
//
// run "after" asks about the steering panel's steered run: the after payload `after_seq` paired with payload `seq`.
// Replies are cached per (seq, run, after_seq, pos); a reply for a seq (or after payload) other than the current one is ignored;
// a request with no reply after `timeoutMs` rejects (the tooltip says so) and may be retried later.
// Ids, cache, timeout and stale replies: the shared `Requests` (requests.ts); here only the fields and decoding.

import type { DetailsRun } from "./contract.gen";
import { Requests, StaleError, type Msg } from "./requests";

export interface Details {
  seq: number;
  run: DetailsRun;
  pos: number;
  topIds: number[][]; // [R][k]
  topProbs: number[][]; // [R][k]
  strings: Map<number, string>;
}

interface Asked {
  run: DetailsRun;
  afterSeq: number;
  pos: number;
}

export { StaleError };

const keyOf = (seq: number, pos: number, run: DetailsRun, afterSeq: number) => (run === "after" ? `${seq}:after${afterSeq}:${pos}` : `${seq}:${pos}`);

/** The details requests of one view (ids, timeout, cache, stale handling: `Requests`, requests.ts). */
export class DetailsClient {
  private afterSeq = -1;
  private readonly requests: Requests<Details, Asked>;

  /** `prefix`: this view's id. Replies go to every view of the widget, so request ids must not
   *  collide between views. */
  constructor(
    send: (msg: Record<string, unknown>) => void,
    readonly timeoutMs = 10_000,
    prefix = "",
  ) {
    this.requests = new Requests<Details, Asked>(send, "details", timeoutMs, prefix);
  }

  /** A new payload arrived: forget everything about older ones. */
  setSeq(seq: number): void {
    this.requests.setSeq(seq);
  }

  /** A new after payload (the steering panel's, `_steer_meta.after_seq`; 0: none): forget the older one's lists. */
  setAfterSeq(afterSeq: number): void {
    if (afterSeq === this.afterSeq) return;
    this.afterSeq = afterSeq;
    this.requests.forget((key) => key.includes(":after"), "steered payload changed");
  }

  cached(seq: number, pos: number, run: DetailsRun = "plain", afterSeq = 0): Details | undefined {
    return this.requests.cached(keyOf(seq, pos, run, afterSeq));
  }

  request(seq: number, pos: number, run: DetailsRun = "plain", afterSeq = 0): Promise<Details> {
    const fields = { pos, ...(run === "after" ? { run, after_seq: afterSeq } : {}) };
    return this.requests.ask(keyOf(seq, pos, run, afterSeq), seq, { run, afterSeq, pos }, fields);
  }

  /** Feed a custom message; returns true when it was a details reply (handled or ignored). */
  handle(msg: unknown): boolean {
    return this.requests.handle(msg, decode);
  }

  dispose(): void {
    this.requests.dispose();
  }
}

/** A details reply for the request `p` of payload `seq`; undefined when it answers another position or run. */
function decode(m: Msg, p: Asked, seq: number): Details | undefined {
  if (m.pos !== undefined && Number(m.pos) !== p.pos) return undefined;
  if ((m.run ?? "plain") !== p.run || (p.run === "after" && Number(m.after_seq) !== p.afterSeq)) return undefined; // another run's list
  const strings = new Map<number, string>();
  for (const [k, v] of Object.entries((m.strings as Record<string, string>) ?? {})) strings.set(Number(k), String(v));
  return {
    seq,
    run: p.run,
    pos: p.pos,
    topIds: (m.top_ids as number[][]) ?? [],
    topProbs: (m.top_probs as number[][]) ?? [],
    strings,
  };
}
