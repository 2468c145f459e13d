// The Python <-> browser protocol, defined once in resid_widgets/payload/protocol.json (read by
// resid_widgets/payload/protocol.py) and bundled here by esbuild: payload version, the metric
// registry (each metric's array, rows, availability, scale, unit, labels, tooltip), the payload's
// arrays, the traits' limits, the τ grid and the uint8 scale of proj_grid. Types generated from the
// same file: contract.gen.ts.

import spec from "../../resid_widgets/payload/protocol.json";
import type { LensName, MetricName } from "./contract.gen";

export type { BundledMetricName, LensName, MetricName, WidgetModel } from "./contract.gen";

export const PROTOCOL_VERSION: number = spec.version;

/** One metric of the registry (protocol.json `metrics`). */
export interface MetricSpec {
  name: MetricName;
  /** metric menu */
  label: string;
  /** payload array holding the values ([R, T], [L, T] for rows "layers", [R, T, n] when per_target) */
  array: string;
  /** the array at every τ of the grid (projection): read while the τ slider is off the payload's τ */
  tau_array?: string;
  per_target?: boolean;
  /** "all": rows 0..R-1; "layers": rows 1..R-1 (layer l's output reaches row l + 1) */
  rows: "all" | "layers" | string;
  /** availability: "" always, "targets", "two_targets", "sublayers" (the header's `lacks` says when the backend has none) */
  needs: string;
  /** colour scale: fixed range, robust max (BOS excluded), diverging around 0, log rank, log */
  scale: "fixed" | "robust" | "diverging" | "log_rank" | "log" | string;
  range?: number[];
  ticks?: number[];
  tick_suffix?: string;
  unit: string;
  /** legend title; {k} {tau} {target} {answer} {counterfactual} {lens_label} are filled in */
  title: string;
  /** tooltip value; {v} = the value, token placeholders ({top1} {final_top1} {target} {answer}
   *  {counterfactual}) become token chips, {target_prob} {tau} {k} {lens_label} text */
  tooltip: string;
  tooltip_label: string;
  digits?: number;
  note?: string;
}

export interface ArrayEntry {
  name: string;
  dtype: string;
  position_axis: number;
  stage: string;
  when: string;
}

/** The registry, in menu order; metrics registered in Python at run time are added from a payload
 *  header's `extra_metrics` (registerExtras). */
export const METRICS: MetricSpec[] = spec.metrics.map((m) => ({ ...m }) as MetricSpec);
const ARRAYS = new Map<string, ArrayEntry>(spec.arrays.map((a) => [a.name, a]));

export function metricSpec(name: string): MetricSpec | undefined {
  return METRICS.find((m) => m.name === name);
}

/** The lenses Python can read the rows with, and how titles name them. */
export const LENSES: readonly LensName[] = spec.lenses as LensName[];
const LENS_LABELS: Record<string, string> = spec.lens_labels;
export function lensLabel(lens: string | undefined): string {
  return LENS_LABELS[lens ?? "logit"] ?? `${lens} lens`;
}
export const TAU_GRID: readonly number[] = spec.tau_grid;
/** proj_grid holds round(pct * GRID_SCALE) as uint8. */
export const GRID_SCALE: number = spec.grid_scale;
/** bytes per element of each wire dtype */
export const DTYPE_BYTES: Readonly<Record<string, number>> = spec.dtypes;
/** The synced traits' defaults and limits (Python checks them; the editor uses them as input limits). */
export const TRAITS = spec.traits;

/** Each payload array's axis of token positions (streamed deltas carry a range of it). */
export function positionAxis(name: string): number {
  return ARRAYS.get(name)?.position_axis ?? 0;
}

/** Metrics (and their arrays) that Python registered at run time travel in the header. */
export function registerExtras(meta: { extra_metrics?: unknown; extra_arrays?: unknown }): void {
  for (const a of (Array.isArray(meta.extra_arrays) ? meta.extra_arrays : []) as ArrayEntry[]) {
    if (a && typeof a.name === "string") ARRAYS.set(a.name, a);
  }
  for (const m of (Array.isArray(meta.extra_metrics) ? meta.extra_metrics : []) as MetricSpec[]) {
    if (!m || typeof m.name !== "string" || typeof m.array !== "string") continue;
    const i = METRICS.findIndex((x) => x.name === m.name);
    if (i >= 0) METRICS[i] = m;
    else METRICS.push(m);
  }
}

export function isMetric(x: unknown): x is MetricName {
  return typeof x === "string" && METRICS.some((m) => m.name === x);
}

/** Why a payload header cannot be shown by this bundle ("" = it can). */
export function versionProblem(meta: { version?: unknown }): string {
  const v = meta.version;
  if (v === PROTOCOL_VERSION) return "";
  return (
    `this payload uses protocol version ${String(v)}, but the widget's JavaScript speaks version ${PROTOCOL_VERSION}; ` +
    "the Python package and its bundled frontend do not match (reinstall resid_widgets and restart the kernel, then reload the page)"
  );
}
