// Streamed stages of an analysis (Python's `delta` messages) merged into a payload the view can show.
//
//   {type: "delta", version, stage: "begin"|"lens"|"done", seq, positions: [p0, p1], arrays, strings,
//    meta?, keep?, base_seq?}  + one binary buffer (the arrays, packed like `_payload`)
//
// begin: the new analysis' header and every array for positions [keep, T); positions [0, keep) are
//        those of payload `base_seq`, which this view must be showing (else it waits for the
//        final payload); lens: the lens arrays of positions [p0, p1); done: emergence rows.
// Each array's axis of positions comes from protocol.json (`arrays[].position_axis`). The merged arrays are
// kept in wire form (the payload's dtypes), so showing a stage is one `decodePayload`.

import type { ArraySpec, Meta } from "./codecs";
import { DTYPE_BYTES, positionAxis, versionProblem } from "./protocol";

const WIDTH = DTYPE_BYTES;

export interface Wire {
  meta: Meta;
  blob: Uint8Array;
}

export interface Delta {
  type: "delta";
  version: number;
  stage: "begin" | "lens" | "done";
  seq: number;
  positions: [number, number];
  arrays: Record<string, ArraySpec>;
  strings: Record<string, string>;
  meta?: Meta;
  keep?: number;
  base_seq?: number;
  /** "after": a stage of the steering panel's steered run (seq, base_seq: after_seq numbers; merged by its own merger) */
  run?: string;
  /** run "after": the plain payload it pairs with */
  pair_seq?: number;
}

export function isDelta(msg: unknown): msg is Delta {
  const m = msg as Delta | null;
  return !!m && typeof m === "object" && m.type === "delta";
}

function bytesOf(data: DataView | ArrayBuffer | Uint8Array): Uint8Array {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

const count = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Copy positions of one array between two layouts that differ only along the position axis. */
function copyPositions(
  src: Uint8Array, srcSpec: ArraySpec, srcFrom: number,
  dst: Uint8Array, dstSpec: ArraySpec, dstFrom: number, n: number, axis: number,
): void {
  if (n <= 0) return;
  const w = WIDTH[dstSpec.dtype];
  const outer = count(dstSpec.shape.slice(0, axis));
  const inner = count(dstSpec.shape.slice(axis + 1)) * w;
  const srcT = srcSpec.shape[axis];
  const dstT = dstSpec.shape[axis];
  for (let o = 0; o < outer; o++) {
    const s = srcSpec.offset + (o * srcT + srcFrom) * inner;
    const d = dstSpec.offset + (o * dstT + dstFrom) * inner;
    dst.set(src.subarray(s, s + n * inner), d);
  }
}

export class StreamMerger {
  private shownWire: Wire | null = null;
  private live: Wire | null = null; // the analysis being streamed

  /** The view now shows this payload (from the `_meta`/`_payload` traits). */
  shown(meta: Meta, payload: DataView | ArrayBuffer | Uint8Array): void {
    this.shownWire = { meta, blob: bytesOf(payload) };
    if (this.live && meta.seq >= this.live.meta.seq) this.live = null; // the final payload has arrived
  }

  /** Merge one delta; the payload to show now, or null (not for this view, or nothing new). */
  apply(msg: Delta, buffer: DataView | ArrayBuffer | Uint8Array | undefined): Wire | null {
    if (versionProblem(msg)) return null; // the final payload will say why
    const part = buffer ? bytesOf(buffer) : new Uint8Array(0);
    if (msg.stage === "begin") return this.begin(msg, part);
    const live = this.live;
    if (!live || live.meta.seq !== msg.seq) return null;
    const [p0, p1] = msg.positions;
    for (const [name, spec] of Object.entries(msg.arrays)) {
      const dst = live.meta.arrays[name];
      if (!dst) continue;
      copyPositions(part, spec, 0, live.blob, dst, p0, p1 - p0, positionAxis(name));
    }
    Object.assign(live.meta.strings, msg.strings);
    return { meta: { ...live.meta }, blob: live.blob };
  }

  private begin(msg: Delta, part: Uint8Array): Wire | null {
    const head = msg.meta;
    if (!head) return null;
    const keep = msg.keep ?? 0;
    const base = [this.live, this.shownWire].find((w) => w !== null && w.meta.seq === msg.base_seq) ?? null;
    if (keep > 0 && !base) {
      this.live = null; // this view is not showing the analysis the kept positions come from
      return null;
    }
    if (this.shownWire && head.seq < this.shownWire.meta.seq) return null; // an old stream
    const T = head.n_tokens;
    // lay the full-size arrays out like the payload (8-byte aligned)
    const arrays: Record<string, ArraySpec> = {};
    let offset = 0;
    for (const [name, spec] of Object.entries(msg.arrays)) {
      const shape = spec.shape.slice();
      shape[positionAxis(name)] = T;
      offset += (8 - (offset % 8)) % 8;
      arrays[name] = { offset, dtype: spec.dtype, shape };
      offset += count(shape) * WIDTH[spec.dtype];
    }
    const blob = new Uint8Array(offset);
    const [p0, p1] = msg.positions;
    for (const [name, spec] of Object.entries(msg.arrays)) {
      const axis = positionAxis(name);
      if (keep > 0) {
        const old = base!.meta.arrays[name];
        if (!old || old.dtype !== spec.dtype) return (this.live = null);
        copyPositions(base!.blob, old, 0, blob, arrays[name], 0, keep, axis);
      }
      copyPositions(part, spec, 0, blob, arrays[name], p0, p1 - p0, axis);
    }
    const strings = keep > 0 ? { ...base!.meta.strings, ...msg.strings } : { ...msg.strings };
    const meta: Meta = { ...head, strings, arrays };
    this.live = { meta, blob };
    return { meta: { ...meta }, blob };
  }
}
