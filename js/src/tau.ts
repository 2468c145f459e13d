// The τ / k shown by every view (heatmap colours, legend, tooltip, toolbar readout), chosen in ONE
// place: either the payload's exact τ (meta.tau, proj_pct) or a point of the τ grid that the
// slider is on (proj_grid), while Python has not answered the written-back τ yet.

import type { Meta } from "./codecs";

export interface TauChoice {
  /** grid index the slider shows (the grid point nearest meta.tau when exact) */
  idx: number;
  tau: number;
  k: number;
  /** true: values come from proj_grid at idx; false: the payload's exact proj_pct */
  fromGrid: boolean;
}

/** tauIdx = the slider's grid index while it is off meta.tau, or null for the payload's exact τ. */
export function tauChoice(meta: Meta, tauIdx: number | null): TauChoice {
  const grid = meta.tau_grid ?? [];
  if (tauIdx !== null && tauIdx >= 0 && tauIdx < grid.length) {
    return { idx: tauIdx, tau: grid[tauIdx], k: meta.k_grid[tauIdx], fromGrid: true };
  }
  let best = 0;
  grid.forEach((g, i) => {
    if (Math.abs(g - meta.tau) < Math.abs(grid[best] - meta.tau)) best = i;
  });
  return { idx: best, tau: meta.tau, k: meta.k, fromGrid: false };
}
