// The Writers panel's requests (protocol.json messages.*.writers; Python: widgets/resid_writers.py).
//
//   JS -> Python  {type: "writers", req, seq, row, pos, writer?, labels?}   req = "<view id>:w<n>"
//   Python -> JS  {type: "writers", req, seq, row, pos, n_layers, n_heads, direction, lens_value,
//                  constant, labels?, writer?} + one float32 buffer     or {type: "writers", req, error}
//
// A cell's buffer: W values (the model's full label layout; NaN = a writer after the row) then the
// [L, 2] attn / MLP strip. A writer's buffer: its value at every position [T]. Labels come once per
// view (asked with `labels: true` until they arrived). Replies are cached per (seq, row, pos[, writer]);
// a reply for another seq than the payload shown is dropped (stale); 10 s without a reply rejects.
// The static export answers from the cells inlined in its header (`answerFromExport`).

import { StaleError } from "./rpc";

export interface WritersCell {
  seq: number;
  row: number;
  pos: number;
  values: Float32Array; // [W]
  strip: Float32Array; // [L * 2]: attn, MLP per layer
  nLayers: number;
  nHeads: number;
  direction: string;
  lensValue: number;
  constant: number;
}

interface Pending {
  key: string;
  seq: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

type Send = (msg: Record<string, unknown>) => void;
type Msg = Record<string, unknown>;

/** float32 little-endian from a DataView / ArrayBuffer at any byteOffset (copied: aligned). */
export function floats(buf: DataView | ArrayBuffer | undefined): Float32Array {
  if (!buf) return new Float32Array(0);
  const view = buf instanceof DataView ? buf : new DataView(buf);
  const out = new Float32Array(Math.floor(view.byteLength / 4));
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

export class WritersClient {
  labels: string[] | null = null;
  private nextReq = 1;
  private seq = -1;
  private readonly cache = new Map<string, unknown>();
  private readonly inflight = new Map<string, Promise<unknown>>();
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly send: Send,
    readonly timeoutMs = 10_000,
    private readonly prefix = "",
  ) {}

  /** The payload shown changed: forget the cells of older ones (their replies are dropped). */
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

  cachedCell(seq: number, row: number, pos: number): WritersCell | undefined {
    return this.cache.get(`${seq}:${row}:${pos}`) as WritersCell | undefined;
  }

  cell(seq: number, row: number, pos: number): Promise<WritersCell> {
    return this.ask(`${seq}:${row}:${pos}`, { seq, row, pos }) as Promise<WritersCell>;
  }

  /** Writer `writer` (index into `labels`) at every position, in the direction of cell (row, pos). */
  writer(seq: number, row: number, pos: number, writer: number): Promise<Float32Array> {
    return this.ask(`${seq}:${row}:${pos}:${writer}`, { seq, row, pos, writer }) as Promise<Float32Array>;
  }

  private ask(key: string, fields: Msg): Promise<unknown> {
    if (this.cache.has(key)) return Promise.resolve(this.cache.get(key));
    const running = this.inflight.get(key);
    if (running) return running;
    const req = `${this.prefix}:w${this.nextReq++}`;
    const seq = Number(fields.seq);
    const promise = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(req);
        this.inflight.delete(key);
        reject(new Error(`no reply from Python after ${Math.round(this.timeoutMs / 1000)} s`));
      }, this.timeoutMs);
      this.pending.set(req, { key, seq, resolve, reject, timer });
    });
    this.inflight.set(key, promise);
    try {
      this.send({ type: "writers", req, ...fields, ...(this.labels ? {} : { labels: true }) });
    } catch (e) {
      const p = this.pending.get(req);
      if (p) this.finish(req, p).reject(e instanceof Error ? e : new Error(String(e)));
    }
    return promise;
  }

  /** Feed a custom message; true when it was a writers reply (handled or dropped). */
  handle(msg: unknown, buffers?: (DataView | ArrayBuffer)[]): boolean {
    const m = msg as Msg | null;
    if (!m || typeof m !== "object" || m.type !== "writers") return false;
    const req = String(m.req);
    const p = this.pending.get(req);
    if (!p) return true; // another view's, timed out or superseded
    if (m.seq !== undefined && Number(m.seq) !== p.seq) return true; // for an older payload: stale
    this.finish(req, p);
    if (typeof m.error === "string" && m.error) {
      p.reject(new Error(m.error));
      return true;
    }
    if (p.seq !== this.seq) return p.reject(new StaleError("payload changed")), true;
    if (Array.isArray(m.labels)) this.labels = m.labels.map(String);
    const data = floats(buffers?.[0]);
    let value: unknown = data;
    if (m.writer === undefined || m.writer === null) {
      const W = this.labels ? this.labels.length : 0;
      value = {
        seq: p.seq,
        row: Number(m.row),
        pos: Number(m.pos),
        values: data.subarray(0, W),
        strip: data.subarray(W),
        nLayers: Number(m.n_layers),
        nHeads: Number(m.n_heads),
        direction: String(m.direction ?? ""),
        lensValue: Number(m.lens_value),
        constant: Number(m.constant),
      } satisfies WritersCell;
    }
    this.cache.set(p.key, value);
    p.resolve(value);
    return true;
  }

  private finish(req: string, p: Pending): Pending {
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

/** What the static export inlines (`meta.writers`, from resid_writers.py `export`). */
interface Exported {
  labels: string[];
  n_layers: number;
  n_heads: number;
  cells: Record<string, { direction: string; lens_value: number; constant: number; values: string }>;
  positions: Record<string, string>;
}

function bytes(b64: string): ArrayBuffer {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out.buffer;
}

/** The static page's answer to a writers request, from the inlined cells (no kernel): the reply and its
 *  buffers, or an error reply that says the cell is not in this file. */
export function answerFromExport(exported: unknown, msg: Msg): [Msg, ArrayBuffer[]] {
  const e = exported as Exported | null | undefined;
  const { req, seq, row, pos, writer } = msg;
  const missing = (what: string): [Msg, ArrayBuffer[]] => [
    { type: "writers", req, seq, error: `${what} not included in this file (only the cells whose writers were shown in the notebook are)` },
    [],
  ];
  const cell = e?.cells?.[`${row}:${pos}`];
  if (!e || !cell) return missing("this cell's writers are");
  const head: Msg = {
    type: "writers", req, seq, row, pos, n_layers: e.n_layers, n_heads: e.n_heads, direction: cell.direction,
    lens_value: cell.lens_value, constant: cell.constant, ...(msg.labels ? { labels: e.labels } : {}),
  };
  if (writer === undefined || writer === null) return [head, [bytes(cell.values)]];
  const at = e.positions?.[`${row}:${pos}:${writer}`];
  if (!at) return missing("this writer at every position is");
  return [{ ...head, writer }, [bytes(at)]];
}
