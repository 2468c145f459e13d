// View state shared with Python (layer, τ, metric, selected cell) and its write-backs.
//
// metric and selected are written at once; layer and τ only after scrubbing has been idle for
// WRITE_BACK_MS (never per step), and while such a write is pending the local value wins over
// model echoes.

import type { Cell } from "./heatmap";
import type { MetricName, ViewOpts } from "./metrics";
import { TRAITS } from "./protocol";
import type { AnyModel } from "./model";
import type { WidgetModel } from "./protocol";
import { debounce } from "./dom";

export const WRITE_BACK_MS = 600;

export class ViewState {
  layer: number;
  metric: MetricName;
  readonly opts: ViewOpts = { tauIdx: null, target: 0 };
  selected: Cell | null = null;
  /** τ value to write when the τ write fires */
  private tauValue: number | null = null;

  private readonly layerWrite = debounce(() => this.write("layer", this.layer), WRITE_BACK_MS);
  private readonly tauWrite = debounce(() => {
    if (this.tauValue !== null) this.write("tau", this.tauValue);
  }, WRITE_BACK_MS);

  constructor(private readonly model: AnyModel) {
    this.layer = Number(model.get("layer")) || 0;
    const m = model.get("metric");
    this.metric = typeof m === "string" && m ? m : TRAITS.metric.default; // run-time metrics arrive with the payload
    this.selected = ViewState.readSelected(model);
  }

  static readSelected(model: AnyModel): Cell | null {
    const s = model.get("selected");
    return Array.isArray(s) && s.length === 2 ? { row: Number(s[0]), pos: Number(s[1]) } : null;
  }

  private write<K extends "layer" | "tau" | "metric" | "selected">(key: K, value: WidgetModel[K]): void {
    this.model.set(key, value);
    this.model.save_changes();
  }

  /** Local layer step: written back once scrubbing stops. */
  scrubLayer(layer: number): void {
    this.layer = layer;
    this.layerWrite.call();
  }

  /** Local τ step to a grid point: written back once scrubbing stops. */
  scrubTau(idx: number, tau: number): void {
    this.opts.tauIdx = idx;
    this.tauValue = tau;
    this.tauWrite.call();
  }

  layerPending(): boolean {
    return this.layerWrite.pending();
  }

  tauPending(): boolean {
    return this.tauWrite.pending();
  }

  writeMetric(m: MetricName): void {
    this.metric = m;
    this.write("metric", m);
  }

  writeSelected(c: Cell | null): void {
    this.selected = c;
    this.write("selected", c ? [c.row, c.pos] : []);
  }

  /** The view goes away: send what is pending now. */
  flush(): void {
    try {
      this.layerWrite.flush();
      this.tauWrite.flush();
    } catch {
      /* model already closed */
    }
  }
}
