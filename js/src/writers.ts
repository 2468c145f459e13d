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
// Ids, cache, timeout and stale replies: the shared `Requests` (requests.ts); here only the fields and decoding.

import { Requests, type Msg } from "./requests";

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

type Send = (msg: Msg) => void;

/** float32 little-endian from a DataView / ArrayBuffer at any byteOffset (copied: aligned). */
export function floats(buf: DataView | ArrayBuffer | undefined): Float32Array {
  if (!buf) return new Float32Array(0);
  const view = buf instanceof DataView ? buf : new DataView(buf);
  const out = new Float32Array(Math.floor(view.byteLength / 4));
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

/** The Writers requests of one view (ids, timeout, cache, stale handling: `Requests`, requests.ts). */
export class WritersClient {
  labels: string[] | null = null;
  private readonly requests: Requests<WritersCell | Float32Array>;

  constructor(
    send: Send,
    readonly timeoutMs = 10_000,
    prefix = "",
  ) {
    this.requests = new Requests<WritersCell | Float32Array>(send, "writers", timeoutMs, prefix, "w");
  }

  /** The payload shown changed: forget the cells of older ones (their replies are dropped). */
  setSeq(seq: number): void {
    this.requests.setSeq(seq);
  }

  cachedCell(seq: number, row: number, pos: number): WritersCell | undefined {
    return this.requests.cached(`${seq}:${row}:${pos}`) as WritersCell | undefined;
  }

  cell(seq: number, row: number, pos: number): Promise<WritersCell> {
    return this.ask(`${seq}:${row}:${pos}`, seq, { row, pos }) as Promise<WritersCell>;
  }

  /** Writer `writer` (index into `labels`) at every position, in the direction of cell (row, pos). */
  writer(seq: number, row: number, pos: number, writer: number): Promise<Float32Array> {
    return this.ask(`${seq}:${row}:${pos}:${writer}`, seq, { row, pos, writer }) as Promise<Float32Array>;
  }

  private ask(key: string, seq: number, fields: Msg): Promise<WritersCell | Float32Array> {
    return this.requests.ask(key, seq, undefined, { ...fields, ...(this.labels ? {} : { labels: true }) });
  }

  /** Feed a custom message; true when it was a writers reply (handled or dropped). */
  handle(msg: unknown, buffers?: (DataView | ArrayBuffer)[]): boolean {
    return this.requests.handle(msg, (m, _info, seq) => {
      if (Array.isArray(m.labels)) this.labels = m.labels.map(String);
      const data = floats(buffers?.[0]);
      if (m.writer !== undefined && m.writer !== null) return data;
      const W = this.labels ? this.labels.length : 0;
      return {
        seq,
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
    });
  }

  dispose(): void {
    this.requests.dispose();
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
