// What each heatmap metric means, read from the registry (protocol.json `metrics`): one generic
// accessor for a cell's value, five scale builders (fixed, robust max, diverging, log rank, log),
// and the legend title filled from the entry's template. No metric is named in this file.

import { isBos, rowLabel, type LensData, type Values } from "./codecs";
import { RDBU, VIRIDIS, sample, type ColorMap } from "./colors";
import { GRID_SCALE, METRICS, lensLabel, metricSpec, type MetricName, type MetricSpec } from "./protocol";
import { tauChoice } from "./tau";
import { visible } from "./text";

export { METRICS, isMetric, metricSpec, type MetricName, type MetricSpec } from "./protocol";

/** View-local settings that change what is drawn without a round trip to Python. */
export interface ViewOpts {
  /** index into meta.tau_grid while the τ slider is off meta.tau; null = the payload's exact τ */
  tauIdx: number | null;
  /** which target for per-target metrics */
  target: number;
}

export interface Tick {
  t: number; // position 0..1 along the legend
  label: string;
}

export interface Scale {
  map: ColorMap;
  title: string;
  unit: string;
  ticks: Tick[];
  note: string;
  /** value -> position 0..1 on the colour map (NaN stays NaN) */
  toT: (v: number) => number;
}

/** Why the session's backend cannot give metric `m` (the header's `lacks` of its `needs`), or "". */
export function lackedReason(d: LensData, m: MetricName): string {
  const s = metricSpec(m);
  return (s && s.needs && d.meta.lacks?.[s.needs]) || "";
}

/** The metric's availability rule (`needs`) and its array present in this payload. */
export function available(d: LensData, m: MetricName): boolean {
  const s = metricSpec(m);
  if (!s || !d.arrays.has(s.array) || lackedReason(d, m)) return false;
  if (s.needs === "targets") return d.nTargets > 0;
  if (s.needs === "two_targets") return d.nTargets > 1 && !!d.meta.logit_diff;
  return true;
}

/** Does the metric have a value at residual row `row`? ("layers": rows 1..L, layer l's output) */
export function coversRow(s: MetricSpec, d: LensData, row: number): boolean {
  return s.rows !== "layers" || (row >= 1 && row <= d.L);
}

/** Flat index of (row, pos[, target]) in array `name` laid out as metric `s` reads it. */
function cellIndex(s: MetricSpec, d: LensData, row: number, pos: number, target: number, perTarget: boolean): number {
  const r = s.rows === "layers" ? row - 1 : row;
  const i = r * d.T + pos;
  return perTarget ? i * d.nTargets + Math.min(target, d.nTargets - 1) : i;
}

/** An id or rank not read yet decodes as -1 (protocol.json `markers`): no value. */
function read(a: Values, i: number): number {
  const v = a[i];
  return a instanceof Int32Array && v < 0 ? NaN : v;
}

/** The value of metric `m` at (row, pos): the one accessor every view uses (heatmap, strip, tooltip). */
export function valueAt(d: LensData, m: MetricName, row: number, pos: number, o: ViewOpts): number {
  const s = metricSpec(m);
  if (!s || !coversRow(s, d, row)) return NaN;
  if (s.tau_array && o.tauIdx !== null) {
    const grid = d.arrays.get(s.tau_array);
    if (grid) return grid[o.tauIdx * d.R * d.T + row * d.T + pos] / GRID_SCALE;
  }
  return arrayAt(d, s, s.array, row, pos, o.target);
}

/** Another array of the same cell (a tooltip's {target_prob}), laid out like the metric's. */
export function arrayAt(d: LensData, s: MetricSpec, name: string, row: number, pos: number, target: number): number {
  const a = d.arrays.get(name);
  if (!a) return NaN;
  return read(a, cellIndex(s, d, row, pos, target, !!s.per_target));
}

export function fmt(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  return Number(v.toPrecision(digits)).toString();
}

function compact(v: number): string {
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(Math.round(v));
}

/** Max of |values| over all finite cells, skipping BOS columns (their norm dwarfs the rest). */
function robustMax(d: LensData, m: MetricName, o: ViewOpts, abs: boolean): number {
  let mx = 0;
  for (let p = 0; p < d.T; p++) {
    if (isBos(d, p) && d.T > 1) continue;
    for (let r = 0; r < d.R; r++) {
      let v = valueAt(d, m, r, p, o);
      if (!Number.isFinite(v)) continue;
      if (abs) v = Math.abs(v);
      if (v > mx) mx = v;
    }
  }
  return mx > 0 ? mx : 1;
}

const clamp01 = (t: number) => (t < 0 ? 0 : t > 1 ? 1 : t);
const finite = (f: (v: number) => number) => (v: number) => (Number.isFinite(v) ? clamp01(f(v)) : NaN);
type Body = Pick<Scale, "map" | "ticks" | "toT"> & { robust: boolean };

/** The registry's scale kinds. */
const SCALES: Record<string, (d: LensData, s: MetricSpec, o: ViewOpts) => Body> = {
  fixed(_d, s) {
    const [lo, hi] = s.range ?? [0, 1];
    const suffix = s.tick_suffix ?? "";
    const ticks = (s.ticks ?? [lo, hi]).map((v) => ({ t: (v - lo) / (hi - lo), label: `${v}${suffix}` }));
    return { map: VIRIDIS, ticks, toT: finite((v) => (v - lo) / (hi - lo)), robust: false };
  },
  robust(d, s, o) {
    const mx = robustMax(d, s.name, o, false);
    const ticks = [0, 0.5, 1].map((t) => ({ t, label: t === 0 ? "0" : fmt(mx * t, 2) }));
    return { map: VIRIDIS, ticks, toT: finite((v) => v / mx), robust: true };
  },
  diverging(d, s, o) {
    const mx = robustMax(d, s.name, o, true);
    const ticks = [{ t: 0, label: `−${fmt(mx, 2)}` }, { t: 0.5, label: "0" }, { t: 1, label: `+${fmt(mx, 2)}` }];
    return { map: RDBU, ticks, toT: finite((v) => 0.5 + v / (2 * mx)), robust: true };
  },
  log_rank(d) {
    const V = Math.max(2, d.meta.d_vocab || 2);
    const lv = Math.log10(V);
    const toT = finite((r) => 1 - Math.log10(r + 1) / lv);
    const ticks: Tick[] = [{ t: 1, label: "0" }];
    for (let p = 10; p < V; p *= 10) ticks.push({ t: toT(p), label: compact(p) });
    ticks.push({ t: 0, label: compact(V - 1) });
    return { map: VIRIDIS, ticks: ticks.sort((a, b) => a.t - b.t), toT, robust: false };
  },
  /** log10 from hi / 1000 (0 and below: the bottom colour) to the robust max: KL spans decades
   *  between the first rows and the last, so a linear scale leaves rows 1..L one colour. */
  log(d, s, o) {
    const hi = robustMax(d, s.name, o, false);
    const lo = hi / 1000;
    const span = Math.log10(hi / lo);
    const toT = finite((v) => Math.log10(Math.max(v, lo) / lo) / span);
    const ticks: Tick[] = [{ t: 0, label: `≤${fmt(lo, 1)}` }];
    for (let e = Math.ceil(Math.log10(lo) + 0.3); 10 ** e < hi * 0.7; e++) ticks.push({ t: toT(10 ** e), label: fmt(10 ** e, 1) });
    ticks.push({ t: 1, label: fmt(hi, 2) });
    return { map: VIRIDIS, ticks, toT, robust: true };
  },
};

/** The entry's template with {k} {tau} {target} {answer} {counterfactual} {lens_label} filled in. */
export function fillTitle(d: LensData, s: MetricSpec, o: ViewOpts): string {
  const { tau, k } = tauChoice(d.meta, o.tauIdx);
  const ld = d.meta.logit_diff;
  const words: Record<string, string> = {
    k: String(k),
    tau: fmt(tau, 3),
    target: visible(d.meta.targets[Math.min(o.target, d.nTargets - 1)] ?? ""),
    answer: visible(ld?.answer ?? ""),
    counterfactual: visible(ld?.counterfactual ?? ""),
    lens_label: lensLabel(d.meta.lens),
  };
  return s.title.replace(/\{(\w+)\}/g, (all, key: string) => words[key] ?? all);
}

/** Colour scale, legend title (the unit is added once, by the legend), ticks and note of a metric. */
export function scaleFor(d: LensData, m: MetricName, o: ViewOpts): Scale {
  const s = metricSpec(m) ?? METRICS[0];
  const body = (SCALES[s.scale] ?? SCALES.robust)(d, s, o);
  const bos = body.robust && d.T > 1 && Array.from({ length: d.T }, (_, p) => isBos(d, p)).some(Boolean) ? "BOS column excluded from the scale range" : "";
  const rows = s.rows === "layers" ? `row “${rowLabel(d.meta, 0)}” has no layer output` : "";
  return {
    map: body.map,
    ticks: body.ticks,
    toT: body.toT,
    title: fillTitle(d, s, o),
    unit: s.unit,
    note: [bos, rows, s.note ?? ""].filter(Boolean).join("; "),
  };
}

/** RGBA pixels (one per cell, [R rows × T columns]) for the heatmap; alpha 0 = not applicable. */
export function cellPixels(d: LensData, m: MetricName, o: ViewOpts, s: Scale): Uint8ClampedArray<ArrayBuffer> {
  const px = new Uint8ClampedArray(d.R * d.T * 4);
  for (let r = 0; r < d.R; r++) {
    for (let p = 0; p < d.T; p++) {
      const c = sample(s.map, s.toT(valueAt(d, m, r, p, o)));
      const j = (r * d.T + p) * 4;
      if (!c) continue;
      px[j] = c[0];
      px[j + 1] = c[1];
      px[j + 2] = c[2];
      px[j + 3] = 255;
    }
  }
  return px;
}
