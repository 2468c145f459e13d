// Before | after | difference of the steering panel, as data: the after payload (`_steer_meta` +
// `_steer_payload`, decoded by the same codec as `_payload`), the difference as a LensData whose
// metric arrays hold after − before, its diverging scale, and the tooltip's before / after / Δ lines.
// No DOM here but the tooltip section (text only, via textContent).

import { decodePayload, isMeta, payloadLength, requiredBytes, type LensData, type PayloadInput } from "./codecs";
import { RDBU } from "./colors";
import { h } from "./dom";
import { fmt, metricSpec, valueAt, type MetricName, type Scale, type ViewOpts } from "./metrics";

export type SteerMode = "before" | "after" | "difference";
export const STEER_MODES: SteerMode[] = ["before", "after", "difference"];

/** The after payload when it belongs to the shown one (`pair_seq` = the shown payload's seq), else null.
 *  Throws when it belongs but cannot be decoded. */
export function decodeAfter(meta: unknown, payload: PayloadInput, shownSeq: number): LensData | null {
  if (!isMeta(meta)) return null;
  const pair = (meta as unknown as { pair_seq?: unknown }).pair_seq;
  if (pair !== shownSeq || payloadLength(payload) < requiredBytes(meta)) return null;
  return decodePayload(meta, payload);
}

/** An id or rank not read yet (-1 in int32 arrays) has no value. */
function readValue(a: ArrayLike<number>, i: number): number {
  const v = a[i];
  return a instanceof Int32Array && v < 0 ? NaN : v;
}

/** `after` with metric `m`'s arrays (its values, and its τ grid) replaced by after − before. */
export function diffData(before: LensData, after: LensData, m: MetricName): LensData {
  const s = metricSpec(m);
  const arrays = new Map(after.arrays);
  for (const name of [s?.array, s?.tau_array]) {
    if (!name) continue;
    const x = before.arrays.get(name);
    const y = after.arrays.get(name);
    if (!x || !y || x.length !== y.length) continue;
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = readValue(y, i) - readValue(x, i);
    arrays.set(name, out);
  }
  return { ...after, arrays };
}

/** Diverging scale of a difference (symmetric around 0, the largest |Δ| over the cells). */
export function diffScale(diff: LensData, m: MetricName, o: ViewOpts, base: Scale): Scale {
  let mx = 0;
  for (let r = 0; r < diff.R; r++) {
    for (let p = 0; p < diff.T; p++) {
      const v = Math.abs(valueAt(diff, m, r, p, o));
      if (Number.isFinite(v) && v > mx) mx = v;
    }
  }
  const span = mx > 0 ? mx : 1;
  const toT = (v: number) => (Number.isFinite(v) ? Math.max(0, Math.min(1, 0.5 + v / (2 * span))) : NaN);
  return {
    map: RDBU,
    title: `after − before: ${base.title}`,
    unit: `Δ ${base.unit}`,
    ticks: [{ t: 0, label: `−${fmt(span, 2)}` }, { t: 0.5, label: "0" }, { t: 1, label: `+${fmt(span, 2)}` }],
    note: "difference: steered minus plain run; 0 (white) = unchanged",
    toT,
  };
}

/** The tooltip's steering lines: the metric at the cell before, after and their difference. */
export function compareLines(before: LensData, after: LensData, m: MetricName, row: number, pos: number, o: ViewOpts, shownAfter = false): HTMLDivElement {
  const s = metricSpec(m);
  const digits = s?.digits ?? 3;
  const b = valueAt(before, m, row, pos, o);
  const a = valueAt(after, m, row, pos, o);
  const d = a - b;
  const body = h("tbody");
  const line = (k: string, v: string, cls: string) => body.append(h("tr", { class: cls }, h("th", { scope: "row", text: k }), h("td", { text: v })));
  line("before", fmt(b, digits), "rw-steer-before");
  line("after", fmt(a, digits), "rw-steer-after");
  line("Δ", Number.isFinite(d) ? `${d > 0 ? "+" : ""}${fmt(d, digits)}` : "—", "rw-steer-delta");
  return h(
    "div",
    { class: "rw-steer-tip" },
    h("div", { class: "rw-steer-tip-title", text: `steering · ${s?.label ?? m}${shownAfter ? " (the lines above: the steered run)" : ""}` }),
    h("table", { class: "rw-tip-kv" }, body),
  );
}
