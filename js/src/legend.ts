// Colour legend: title with units, a gradient bar, tick labels, and a note.

import { gradientCss } from "./colors";
import { h } from "./dom";
import type { MetricName, Scale } from "./metrics";

export class Legend {
  readonly el: HTMLDivElement;
  private readonly title: HTMLDivElement;
  private readonly bar: HTMLDivElement;
  private readonly ticks: HTMLDivElement;
  private readonly note: HTMLDivElement;

  constructor() {
    this.title = h("div", { class: "rw-legend-title" });
    this.bar = h("div", { class: "rw-legend-bar" });
    this.ticks = h("div", { class: "rw-legend-ticks" });
    this.note = h("div", { class: "rw-legend-note" });
    this.el = h(
      "div",
      { class: "rw-legend", "aria-live": "polite" },
      this.title,
      h("div", { class: "rw-legend-scale" }, this.bar, this.ticks),
      this.note,
    );
  }

  set(metric: MetricName, s: Scale): void {
    this.el.dataset.metric = metric;
    this.el.dataset.unit = s.unit;
    this.title.textContent = `${s.title} [${s.unit}]`;
    this.bar.style.background = gradientCss(s.map);
    this.ticks.replaceChildren(
      ...s.ticks.map((t) => {
        const e = h("span", { class: "rw-legend-tick", text: t.label });
        e.style.left = `${t.t * 100}%`;
        return e;
      }),
    );
    this.note.textContent = s.note;
    this.note.hidden = !s.note;
  }
}
