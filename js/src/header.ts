// Header (model name, badges, shape), the computing indicator and the error banner.

import type { LensData } from "./codecs";
import { h } from "./dom";

export class Header {
  readonly el: HTMLDivElement;
  readonly errorBox: HTMLDivElement;
  private readonly name = h("span", { class: "rw-model-name" });
  private readonly demo = h("span", { class: "rw-badge rw-badge-demo", text: "demo model", hidden: true, title: "A small demo model: English-like locally, no facts" });
  private readonly staticBadge = h("span", { class: "rw-badge rw-badge-static", text: "static export", hidden: true });
  private readonly shape = h("span", { class: "rw-shape" });
  private readonly progressBar = h("span", { class: "rw-progress-bar" });
  private readonly statusText = h("span", { class: "rw-status-text" });
  private readonly status: HTMLSpanElement;
  private readonly errorText = h("span", { class: "rw-error-text" });

  constructor() {
    this.status = h(
      "span",
      { class: "rw-status", role: "status", "aria-live": "polite", hidden: true },
      h("span", { class: "rw-spinner", "aria-hidden": "true" }),
      this.statusText,
      h("span", { class: "rw-progress", "aria-hidden": "true" }, this.progressBar),
    );
    this.el = h("div", { class: "rw-header" }, this.name, this.demo, this.staticBadge, this.shape, this.status);
    this.errorBox = h("div", { class: "rw-error", role: "alert", hidden: true }, h("strong", { text: "Error: " }), this.errorText);
  }

  setData(d: LensData): void {
    this.name.textContent = d.meta.model_name || "model";
    this.demo.hidden = !d.meta.is_demo;
    this.shape.textContent = `${d.T} tokens · ${d.L} layers · d_model ${d.meta.d_model}`;
  }

  /** busy: this view waits for its edit or Python computes; progress 0..1 when known; stage: what a
   *  backend that runs elsewhere is doing (queued, running, reading out), "" for a local model. */
  showStatus(busy: boolean, progress: number | null, stage = ""): void {
    this.status.hidden = !busy;
    const known = progress !== null && Number.isFinite(progress) && progress > 0;
    const what = stage ? `${stage}…` : "computing…";
    this.statusText.textContent = known ? `${what} ${Math.round(progress * 100)}%` : what;
    this.progressBar.style.width = known ? `${Math.max(0, Math.min(1, progress)) * 100}%` : "";
    this.status.classList.toggle("rw-indeterminate", !known);
  }

  showError(msg: string): void {
    this.errorText.textContent = msg;
    this.errorBox.hidden = !msg;
  }

  setStatic(on: boolean): void {
    this.staticBadge.hidden = !on;
  }
}
