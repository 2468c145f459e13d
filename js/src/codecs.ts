// Decode the widget's `_meta` (JSON) + `_payload` (bytes) into typed arrays.
//
// The payload is one little-endian blob built by `resid_widgets.payload.pack_arrays`; each array
// starts at an 8-byte-aligned offset *within the blob*, but the blob itself may arrive as a
// DataView at an arbitrary (unaligned) byteOffset, so every slice is copied before a typed array
// is made from it. float16 is decoded by hand (Float16Array is not everywhere yet).

import type { DType } from "./contract.gen";
import { DTYPE_BYTES, METRICS, registerExtras } from "./protocol";

export type { DType } from "./contract.gen";

export interface ArraySpec {
  offset: number;
  dtype: DType;
  shape: number[];
}

/** [character, first byte, last byte, bytes in the character] (bytes counted from 1) */
export type CharRun = [string, number, number, number];

export interface Meta {
  version: number;
  seq: number;
  client_seq: number;
  /** which lens read the rows: "logit" | "jacobian" | "tuned" */
  lens?: string;
  /** id of the view whose edit this payload answers ("" = Python or the initial view) */
  client_view?: string;
  /** positions that hold part of a multi-token UTF-8 character: {pos: runs} */
  chars?: Record<string, CharRun[]>;
  /** single tokens of this vocabulary to suggest as targets (the targets field's placeholder) */
  suggested_targets?: string[];
  model_name: string;
  is_demo: boolean;
  prompt: string;
  n_layers: number;
  n_rows: number;
  n_tokens: number;
  top_k: number;
  d_model: number;
  d_vocab: number;
  row_labels: string[];
  hook_names: string[];
  has_bos: boolean;
  /** positions holding a BOS token the tokenizer prepended (Python's `Analysis.is_bos`) */
  bos_positions?: number[];
  /** what the session's backend cannot give ({need: reason}): metrics whose `needs` is listed are unavailable */
  lacks?: Record<string, string>;
  /** what the session's backend refuses ({feature: message}: interventions, attribution) */
  refused?: Record<string, string>;
  /** metrics (and their arrays) registered in Python at run time: protocol.json entries */
  extra_metrics?: unknown[];
  extra_arrays?: unknown[];
  targets: string[];
  target_ids: number[];
  logit_diff: null | { answer: string; counterfactual: string };
  tau: number;
  k: number;
  tau_grid: number[];
  k_grid: number[];
  strings: Record<string, string>;
  arrays: Record<string, ArraySpec>;
}

/** A decoded payload array: ids and ranks as Int32Array (-1 = not read yet), values as Float32Array,
 *  proj_grid as Uint8Array. */
export type Values = Float32Array | Int32Array | Uint8Array;

/** Everything the views need, decoded once per payload. Flat arrays are row-major. */
export interface LensData {
  meta: Meta;
  /** residual rows (L + 1) */
  R: number;
  /** tokens */
  T: number;
  /** layers */
  L: number;
  /** number of targets */
  nTargets: number;
  /** every payload array by its protocol.json name (the metric registry's `array`) */
  arrays: Map<string, Values>;
  tokenIds: Int32Array; // [T]
  top1Id: Int32Array; // [R,T]
  top1Prob: Float32Array; // [R,T]
  projGrid: Uint8Array | null; // [G,R,T], value/2.55 = %
  emergence: Int32Array | null; // [T] (-1: never)
  /** optional (static export): full top-k per cell */
  topIds: Int32Array | null; // [R,T,k]
  topProbs: Float32Array | null; // [R,T,k]
  topK: number; // k of topIds (0 when absent)
  strings: Map<number, string>;
}

export type PayloadInput = DataView | ArrayBuffer | Uint8Array | null | undefined;

const BYTES: Readonly<Record<string, number>> = DTYPE_BYTES;

/** IEEE 754 half -> float32, via a 64 Ki lookup table built on first use. */
let HALF_TABLE: Float32Array | null = null;
function halfTable(): Float32Array {
  if (HALF_TABLE) return HALF_TABLE;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    let v: number;
    if (e === 0) v = f * 2 ** -24; // subnormal (and zero)
    else if (e === 31) v = f ? NaN : Infinity;
    else v = (1 + f / 1024) * 2 ** (e - 15);
    t[h] = s * v;
  }
  HALF_TABLE = t;
  return t;
}

export function decodeFloat16(bits: Uint16Array): Float32Array {
  const t = halfTable();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = t[bits[i]];
  return out;
}

function asBytes(data: PayloadInput): Uint8Array {
  if (!data) return new Uint8Array(0);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  // DataView (anywidget Bytes) or any other ArrayBufferView
  const v = data as ArrayBufferView;
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function count(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes the payload must have for every array in meta.arrays to fit. */
export function requiredBytes(meta: Meta): number {
  let need = 0;
  for (const spec of Object.values(meta.arrays ?? {})) {
    need = Math.max(need, spec.offset + count(spec.shape) * (BYTES[spec.dtype] ?? 1));
  }
  return need;
}

export function payloadLength(data: PayloadInput): number {
  return asBytes(data).byteLength;
}

type Decoded = Float32Array | Int32Array | Uint16Array | Uint8Array;

/** Copy one array out of the blob (little endian) into an owned, aligned typed array. */
export function readArray(data: PayloadInput, spec: ArraySpec): Decoded {
  const bytes = asBytes(data);
  const width = BYTES[spec.dtype];
  if (!width) throw new Error(`unknown dtype ${spec.dtype}`);
  const n = count(spec.shape);
  const end = spec.offset + n * width;
  if (spec.offset < 0 || end > bytes.byteLength) {
    throw new Error(`array out of bounds (${spec.offset}..${end} > ${bytes.byteLength})`);
  }
  const copy = bytes.slice(spec.offset, end); // new, 0-offset buffer: aligned
  const buf = copy.buffer;
  const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  if (!le && width > 1) {
    // big-endian host: swap in place (practically never taken)
    for (let i = 0; i < copy.length; i += width) copy.subarray(i, i + width).reverse();
  }
  switch (spec.dtype) {
    case "float16":
      return decodeFloat16(new Uint16Array(buf));
    case "float32":
      return new Float32Array(buf);
    case "int32":
      return new Int32Array(buf);
    case "uint16":
      return new Uint16Array(buf);
    case "uint8":
      return copy;
  }
}

function expectShape(name: string, spec: ArraySpec | undefined, shape: number[]): void {
  if (!spec) return;
  const ok = spec.shape.length === shape.length && spec.shape.every((d, i) => d === shape[i]);
  if (!ok) throw new Error(`${name}: shape [${spec.shape}] != expected [${shape}]`);
}

function f32(data: PayloadInput, spec: ArraySpec | undefined): Float32Array | null {
  if (!spec) return null;
  const a = readArray(data, spec);
  return a instanceof Float32Array ? a : Float32Array.from(a as ArrayLike<number>);
}

/** Ids and ranks; a lens cell not read yet (streaming) holds the dtype's largest value -> -1. */
function i32(data: PayloadInput, spec: ArraySpec | undefined): Int32Array | null {
  if (!spec) return null;
  const a = readArray(data, spec);
  if (a instanceof Int32Array) return a;
  const out = Int32Array.from(a as ArrayLike<number>);
  if (spec.dtype === "uint16") for (let i = 0; i < out.length; i++) if (out[i] === 0xffff) out[i] = -1;
  return out;
}

/** True when meta looks like a lens payload header at all (not `{}` before the first compute). */
export function isMeta(x: unknown): x is Meta {
  const m = x as Meta | null;
  return !!m && typeof m === "object" && typeof m.n_rows === "number" && !!m.arrays;
}

/** Decode one array into its view form (see `Values`). */
function decodeArray(data: PayloadInput, spec: ArraySpec): Values {
  if (spec.dtype === "uint8") return readArray(data, spec) as Uint8Array;
  if (spec.dtype === "uint16" || spec.dtype === "int32") return i32(data, spec)!;
  return f32(data, spec)!;
}

export function decodePayload(meta: Meta, data: PayloadInput): LensData {
  registerExtras(meta);
  const A = meta.arrays;
  const R = meta.n_rows;
  const T = meta.n_tokens;
  const L = meta.n_layers ?? R - 1;
  const nTargets = (meta.targets ?? []).length;
  for (const req of ["token_ids", "top1_id", "top1_prob", "proj_pct"]) {
    if (!A[req]) throw new Error(`payload is missing the array ${req}`);
  }
  expectShape("token_ids", A.token_ids, [T]);
  expectShape("top1_id", A.top1_id, [R, T]);
  expectShape("proj_grid", A.proj_grid, [(meta.tau_grid ?? []).length, R, T]);
  expectShape("emergence", A.emergence, [T]);
  for (const m of METRICS) {
    const rows = m.rows === "layers" ? L : R;
    expectShape(m.array, A[m.array], m.per_target ? [rows, T, nTargets] : [rows, T]);
  }
  const topK = A.top_ids ? A.top_ids.shape[2] ?? 0 : 0;
  if (A.top_ids) expectShape("top_ids", A.top_ids, [R, T, topK]);
  if (A.top_probs) expectShape("top_probs", A.top_probs, [R, T, topK]);

  const strings = new Map<number, string>();
  for (const [k, v] of Object.entries(meta.strings ?? {})) strings.set(Number(k), String(v));

  const arrays = new Map<string, Values>();
  for (const [name, spec] of Object.entries(A)) arrays.set(name, decodeArray(data, spec));
  const full = !!(A.top_ids && A.top_probs);
  return {
    meta,
    R,
    T,
    L,
    nTargets,
    arrays,
    tokenIds: arrays.get("token_ids") as Int32Array,
    top1Id: arrays.get("top1_id") as Int32Array,
    top1Prob: arrays.get("top1_prob") as Float32Array,
    projGrid: (arrays.get("proj_grid") as Uint8Array | undefined) ?? null,
    emergence: (arrays.get("emergence") as Int32Array | undefined) ?? null,
    topIds: full ? (arrays.get("top_ids") as Int32Array) : null,
    topProbs: full ? (arrays.get("top_probs") as Float32Array) : null,
    topK: full ? topK : 0,
    strings,
  };
}

/** The BOS rule, defined once: position `p` holds a BOS token the tokenizer prepended, as Python
 *  sent it (`bos_positions` = `Analysis.is_bos`); a header without it: `has_bos` at position 0. */
export function isBos(d: LensData, p: number): boolean {
  const bos = d.meta.bos_positions;
  return bos ? bos.includes(p) : !!d.meta.has_bos && p === 0;
}

/** The heatmap's label of residual row `row` ("embed", "0", "1", ...: row l + 1 = after layer l). */
export function rowLabel(meta: Meta, row: number): string {
  return meta.row_labels[row] ?? String(row);
}

/** A residual row in prose, with the heatmap's label: "the embeddings", "layer 3". */
export function rowName(meta: Meta, row: number): string {
  return row === 0 ? "the embeddings" : `layer ${rowLabel(meta, row)}`;
}

/** Token text for an id ("⟨id⟩" when the string table lacks it). */
export function tokenText(d: LensData, id: number): string {
  if (id < 0) return "…"; // a lens cell not read yet (streaming)
  const s = d.strings.get(id);
  return s === undefined ? `⟨${id}⟩` : s;
}
