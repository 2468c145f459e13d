// What each heatmap metric means: value per cell, colour scale, legend ticks and units.

import type { LensData } from "./codecs";
import { RDBU, VIRIDIS, sample, type ColorMap } from "./colors";

function lensName(d: LensData): string {
  const l = d.meta.lens ?? "logit";
  return l === "jacobian" ? "Jacobian lens" : l === "tuned" ? "tuned lens" : "logit lens";
}
import { GRID_SCALE, type MetricName } from "./protocol";
import { tauChoice } from "./tau";
import { visible } from "./text";

export { METRICS, isMetric, type MetricName } from "./protocol";

/** View-local settings that change what is drawn without a round trip to Python. */
export interface ViewOpts {
  /** index into meta.tau_grid while the τ slider is off meta.tau; null = exact proj_pct */
  tauIdx: number | null;
  /** which target for target_rank */
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

export function available(d: LensData, m: MetricName): boolean {
  switch (m) {
    case "projection":
    case "top1_prob":
      return true;
    case "target_rank":
      return d.nTargets > 0 && !!d.targetRank;
    case "logit_diff":
      return !!d.logitDiff;
    case "resid_norm":
      return !!d.residNorm;
    case "attn_norm":
      return !!d.attnNorm;
    case "mlp_norm":
      return !!d.mlpNorm;
    case "kl":
      return !!d.kl;
    case "entropy":
      return !!d.entropy;
    case "final_rank":
      return !!d.finalRank;
  }
}

/** Projection % of residual row `row` at `pos`, at the view's τ. */
export function projAt(d: LensData, row: number, pos: number, tauIdx: number | null): number {
  const i = row * d.T + pos;
  if (tauIdx !== null && d.projGrid) return d.projGrid[tauIdx * d.R * d.T + i] / GRID_SCALE;
  return d.projPct[i];
}

/** Norm of layer (row - 1)'s attention/MLP output; row 0 (embeddings) has none. */
function layerOut(a: Float32Array | null, d: LensData, row: number, pos: number): number {
  if (!a || row < 1 || row > d.L) return NaN;
  return a[(row - 1) * d.T + pos];
}

/** A rank; -1 = a lens cell not read yet (streaming). */
const rankOrNaN = (r: number) => (r < 0 ? NaN : r);

export function valueAt(d: LensData, m: MetricName, row: number, pos: number, o: ViewOpts): number {
  const i = row * d.T + pos;
  switch (m) {
    case "projection":
      return projAt(d, row, pos, o.tauIdx);
    case "top1_prob":
      return d.top1Prob[i];
    case "target_rank":
      return d.targetRank ? rankOrNaN(d.targetRank[i * d.nTargets + Math.min(o.target, d.nTargets - 1)]) : NaN;
    case "logit_diff":
      return d.logitDiff ? d.logitDiff[i] : NaN;
    case "resid_norm":
      return d.residNorm ? d.residNorm[i] : NaN;
    case "attn_norm":
      return layerOut(d.attnNorm, d, row, pos);
    case "mlp_norm":
      return layerOut(d.mlpNorm, d, row, pos);
    case "kl":
      return d.kl ? d.kl[i] : NaN;
    case "entropy":
      return d.entropy ? d.entropy[i] : NaN;
    case "final_rank":
      return d.finalRank ? rankOrNaN(d.finalRank[i]) : NaN;
  }
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

/** Max of |values| over all finite cells, skipping the BOS column (its norm dwarfs the rest). */
function robustMax(d: LensData, m: MetricName, o: ViewOpts, abs: boolean): number {
  let mx = 0;
  const skip = d.meta.has_bos && d.T > 1 ? 0 : -1;
  for (let r = 0; r < d.R; r++) {
    for (let p = 0; p < d.T; p++) {
      if (p === skip) continue;
      let v = valueAt(d, m, r, p, o);
      if (!Number.isFinite(v)) continue;
      if (abs) v = Math.abs(v);
      if (v > mx) mx = v;
    }
  }
  return mx > 0 ? mx : 1;
}

const clamp01 = (t: number) => (t < 0 ? 0 : t > 1 ? 1 : t);

export function scaleFor(d: LensData, m: MetricName, o: ViewOpts): Scale {
  const lin = (lo: number, hi: number) => (v: number) => (Number.isFinite(v) ? clamp01((v - lo) / (hi - lo)) : NaN);
  const bosNote = d.meta.has_bos && d.T > 1 ? "BOS column excluded from the scale range" : "";
  switch (m) {
    case "projection": {
      const { tau, k } = tauChoice(d.meta, o.tauIdx);
      return {
        map: VIRIDIS,
        title: `projection onto the top-${k} subspace of W_U (τ = ${fmt(tau, 3)})`,
        unit: "%",
        ticks: [0, 25, 50, 75, 100].map((v) => ({ t: v / 100, label: `${v}%` })),
        note: "",
        toT: lin(0, 100),
      };
    }
    case "top1_prob":
      return {
        map: VIRIDIS,
        title: "top-1 probability",
        unit: "probability",
        ticks: [0, 0.25, 0.5, 0.75, 1].map((v) => ({ t: v, label: String(v) })),
        note: "",
        toT: lin(0, 1),
      };
    case "target_rank":
    case "final_rank": {
      const V = Math.max(2, d.meta.d_vocab || 2);
      const lv = Math.log10(V);
      const toT = (r: number) => (Number.isFinite(r) ? clamp01(1 - Math.log10(r + 1) / lv) : NaN);
      const ticks: Tick[] = [{ t: 1, label: "0" }];
      for (let p = 10; p < V; p *= 10) ticks.push({ t: toT(p), label: compact(p) });
      ticks.push({ t: 0, label: compact(V - 1) });
      const tgt = d.meta.targets[Math.min(o.target, d.nTargets - 1)] ?? "";
      return {
        map: VIRIDIS,
        title:
          m === "target_rank"
            ? `rank of target “${visible(tgt)}” (0 = top-1, log scale)`
            : `rank of the model's own final top-1 under the ${lensName(d)} (0 = top-1, log scale)`,
        unit: "rank",
        ticks: ticks.sort((a, b) => a.t - b.t),
        note: m === "final_rank" ? "◆ marks the row from which the final top-1 stays in the top-k" : "",
        toT,
      };
    }
    case "kl":
    case "entropy": {
      const mx = robustMax(d, m, o, false);
      return {
        map: VIRIDIS,
        title:
          m === "kl"
            ? `KL(model output ‖ ${lensName(d)}) per cell, nats (0 = the model's own distribution)`
            : `entropy of the ${lensName(d)}'s distribution, nats`,
        unit: "nats",
        ticks: [
          { t: 0, label: "0" },
          { t: 0.5, label: fmt(mx / 2, 2) },
          { t: 1, label: fmt(mx, 2) },
        ],
        note: bosNote,
        toT: lin(0, mx),
      };
    }
    case "logit_diff": {
      const mx = robustMax(d, m, o, true);
      const ld = d.meta.logit_diff;
      return {
        map: RDBU,
        title: ld
          ? `logit difference “${visible(ld.answer)}” − “${visible(ld.counterfactual)}”`
          : "logit difference",
        unit: "logits",
        ticks: [
          { t: 0, label: `−${fmt(mx, 2)}` },
          { t: 0.5, label: "0" },
          { t: 1, label: `+${fmt(mx, 2)}` },
        ],
        note: bosNote,
        toT: (v: number) => (Number.isFinite(v) ? clamp01(0.5 + v / (2 * mx)) : NaN),
      };
    }
    case "resid_norm":
    case "attn_norm":
    case "mlp_norm": {
      const mx = robustMax(d, m, o, false);
      const what = m === "resid_norm" ? "residual stream" : m === "attn_norm" ? "attention output" : "MLP output";
      return {
        map: VIRIDIS,
        title: `${what} norm ‖x‖₂`,
        unit: "L2 norm",
        ticks: [
          { t: 0, label: "0" },
          { t: 0.5, label: fmt(mx / 2, 2) },
          { t: 1, label: fmt(mx, 2) },
        ],
        note: [bosNote, m === "resid_norm" ? "" : "row “embed” has no layer output"].filter(Boolean).join("; "),
        toT: lin(0, mx),
      };
    }
  }
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
