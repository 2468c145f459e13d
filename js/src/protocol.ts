// The Python <-> browser protocol, defined once in resid_widgets/payload/protocol.json (read by
// resid_widgets/payload/protocol.py) and bundled here by esbuild: payload version, metric list
// and labels, the τ grid, the uint8 scale of proj_grid, and the custom message types.

import spec from "../../resid_widgets/payload/protocol.json";

export const PROTOCOL_VERSION: number = spec.version;

/** Metric names the view knows how to draw (the switch statements in metrics.ts). A metric the
 *  JSON adds without frontend support fails loudly at load time instead of drawing nothing. */
export type MetricName =
  | "projection" | "top1_prob" | "target_rank" | "logit_diff" | "resid_norm" | "attn_norm" | "mlp_norm"
  | "kl" | "entropy" | "final_rank";
const DRAWABLE: ReadonlySet<string> = new Set<MetricName>([
  "projection", "top1_prob", "target_rank", "logit_diff", "resid_norm", "attn_norm", "mlp_norm",
  "kl", "entropy", "final_rank",
]);

export const METRICS: { name: MetricName; label: string }[] = spec.metrics.map((m) => {
  if (!DRAWABLE.has(m.name)) throw new Error(`protocol.json lists metric ${m.name}, which this frontend cannot draw`);
  return { name: m.name as MetricName, label: m.label };
});

/** The lenses Python can read the rows with. */
export const LENSES: readonly string[] = spec.lenses;
export const TAU_GRID: readonly number[] = spec.tau_grid;
/** proj_grid holds round(pct * GRID_SCALE) as uint8. */
export const GRID_SCALE: number = spec.grid_scale;
/** Each payload array's axis of token positions (streamed deltas carry a range of it). */
export const POSITION_AXIS: Readonly<Record<string, number>> = spec.position_axis;
export const MESSAGES_TO_PYTHON: readonly string[] = spec.messages.to_python;
export const MESSAGES_TO_BROWSER: readonly string[] = spec.messages.to_browser;

export function isMetric(x: unknown): x is MetricName {
  return METRICS.some((m) => m.name === x);
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
