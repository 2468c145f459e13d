// Inputs: the prompt editor (prompt, targets, top-k) and the toolbar (layer and τ sliders,
// metric and target pickers, PNG button). Views only: widget.ts decides what the events mean.

import { rowLabel, type LensData } from "./codecs";
import { h } from "./dom";
import { METRICS, available, fmt, lackedReason, metricSpec, type MetricName } from "./metrics";
import { LENSES, TRAITS, lensLabel } from "./protocol";
import { tauChoice } from "./tau";
import { visible } from "./text";

let uid = 0;
const nextId = (name: string) => `rw-${name}-${++uid}`;

/** "␣Paris, London" -> [" Paris", " London"]: split on commas only, no trimming. */
export function parseTargets(s: string): string[] {
  return s.split(",").filter((t) => t.trim() !== "");
}

export function formatTargets(t: string[]): string {
  return t.join(",");
}

export interface EditValues {
  prompt: string;
  targets: string[];
  top_k: number;
  /** which lens reads the rows (protocol.json `lenses`) */
  lens: string;
}

export class Editor {
  readonly el: HTMLDivElement;
  readonly prompt: HTMLTextAreaElement;
  readonly targets: HTMLInputElement;
  readonly topk: HTMLInputElement;
  readonly lens: HTMLSelectElement;
  private readonly note: HTMLParagraphElement;

  constructor(onInput: () => void, onCommit: () => void = onInput) {
    const pid = nextId("prompt");
    const tid = nextId("targets");
    const kid = nextId("topk");
    this.prompt = h("textarea", { class: "rw-prompt", id: pid, rows: 2, spellcheck: "false" });
    this.targets = h("input", {
      class: "rw-targets",
      id: tid,
      type: "text",
      spellcheck: "false",
      placeholder: "single tokens, comma-separated",
      title: "Comma-separated target tokens; spaces are kept (a leading space is part of the token)",
    });
    this.topk = h("input", { class: "rw-topk-input", id: kid, type: "number", min: TRAITS.top_k.min, max: TRAITS.top_k.max, step: 1 });
    const lid = nextId("lens");
    this.lens = h("select", {
      class: "rw-lens",
      id: lid,
      title: "How each residual row is read out: the logit lens (as is), the Jacobian lens (transported by the average Jacobian to the last layer) or the tuned lens (a trained affine translator per row)",
    });
    for (const l of LENSES) this.lens.append(h("option", { value: l, text: lensLabel(l) }));
    this.note = h("p", { class: "rw-static-note", hidden: true, text: "Static export: editing is disabled (hover, layer and τ still work)." });
    this.el = h(
      "div",
      { class: "rw-editor" },
      h("label", { class: "rw-label", for: pid, text: "prompt" }),
      this.prompt,
      h(
        "div",
        { class: "rw-editor-row" },
        h("label", { class: "rw-label", for: tid, text: "targets" }),
        this.targets,
        h("label", { class: "rw-label", for: kid, text: "top-k" }),
        this.topk,
        h("label", { class: "rw-label", for: lid, text: "lens" }),
        this.lens,
      ),
      this.note,
    );
    for (const e of [this.prompt, this.targets, this.topk]) e.addEventListener("input", onInput);
    this.lens.addEventListener("change", onCommit);
  }

  values(): EditValues {
    return {
      prompt: this.prompt.value,
      targets: parseTargets(this.targets.value),
      // as typed (an empty field reads 0): Python's contract says what is wrong with 0, 101 or 1.9
      // instead of this view rounding or clamping it silently
      top_k: Number(this.topk.value),
      lens: this.lens.value,
    };
  }

  /** Set fields from the model (only those that differ, so the caret isn't disturbed). */
  setValues(v: Partial<EditValues>): void {
    if (v.prompt !== undefined && this.prompt.value !== v.prompt) {
      this.prompt.value = v.prompt;
      this.fitPrompt();
    }
    if (v.targets !== undefined) {
      const cur = parseTargets(this.targets.value);
      const same = cur.length === v.targets.length && cur.every((t, i) => t === v.targets![i]);
      if (!same) this.targets.value = formatTargets(v.targets);
    }
    if (v.top_k !== undefined && Number(this.topk.value) !== v.top_k) this.topk.value = String(v.top_k);
    if (v.lens !== undefined && this.lens.value !== v.lens) this.lens.value = v.lens;
  }

  /** Rows for the prompt box: 2 for a short prompt, up to 8 for a long one (~90 characters a row; the box
   *  stays resizable). A 1,000-token prompt in 2 rows could not be read or edited. */
  private fitPrompt(): void {
    const text = this.prompt.value;
    const lines = text.split("\n").reduce((n, line) => n + Math.max(1, Math.ceil(line.length / 90)), 0);
    this.prompt.rows = Math.max(2, Math.min(8, lines));
  }

  /** Suggest targets in the empty field: tokens of the loaded vocabulary (e.g. the last position's
   *  top predictions), written as the field parses them (comma-separated, spaces kept). */
  suggest(tokens: string[]): void {
    const ok = tokens.filter((t) => t !== "" && !t.includes(","));
    this.targets.placeholder = ok.length ? `e.g. ${formatTargets(ok)}` : "single tokens, comma-separated";
    this.targets.dataset.suggested = JSON.stringify(ok);
  }

  setStatic(on: boolean): void {
    for (const e of [this.prompt, this.targets, this.topk, this.lens]) e.disabled = on;
    this.note.hidden = !on;
  }
}

export interface ToolbarHandlers {
  layer(layer: number): void;
  tau(idx: number): void;
  metric(m: MetricName): void;
  target(t: number): void;
  png(): void;
}

export class Toolbar {
  readonly el: HTMLDivElement;
  readonly layer: HTMLInputElement;
  readonly layerOut: HTMLOutputElement;
  readonly tau: HTMLInputElement;
  readonly tauOut: HTMLOutputElement;
  readonly metric: HTMLSelectElement;
  readonly target: HTMLSelectElement;
  readonly png: HTMLButtonElement;
  private readonly targetGroup: HTMLSpanElement;

  constructor(hd: ToolbarHandlers) {
    const lid = nextId("layer");
    const tid = nextId("tau");
    const mid = nextId("metric");
    const gid = nextId("target");
    this.layer = h("input", { class: "rw-layer-slider", id: lid, type: "range", min: 0, max: 0, step: 1, value: 0 });
    this.layerOut = h("output", { class: "rw-layer-readout", for: lid });
    this.tau = h("input", { class: "rw-tau-slider", id: tid, type: "range", min: 0, max: 0, step: 1, value: 0 });
    this.tauOut = h("output", { class: "rw-tau-readout", for: tid });
    this.metric = h("select", { class: "rw-metric", id: mid });
    for (const m of METRICS) this.metric.append(h("option", { value: m.name, text: m.label }));
    this.target = h("select", { class: "rw-target-select", id: gid });
    this.targetGroup = h(
      "span",
      { class: "rw-group rw-target-group", hidden: true },
      h("label", { class: "rw-label", for: gid, text: "target" }),
      this.target,
    );
    this.png = h("button", { class: "rw-png", type: "button", title: "Download the heatmap as a PNG image", text: "PNG" });

    this.el = h(
      "div",
      { class: "rw-toolbar" },
      h("span", { class: "rw-group rw-layer-group" }, h("label", { class: "rw-label", for: lid, text: "layer" }), this.layer, this.layerOut),
      h("span", { class: "rw-group rw-tau-group" }, h("label", { class: "rw-label", for: tid, text: "τ" }), this.tau, this.tauOut),
      // one unbreakable group: choosing "target rank" (its target menu appears) never leaves the PNG button
      // alone on a line of its own in a narrow output
      h(
        "span",
        { class: "rw-group rw-colour-group" },
        h("span", { class: "rw-group" }, h("label", { class: "rw-label", for: mid, text: "colour" }), this.metric),
        this.targetGroup,
        this.png,
      ),
    );

    this.layer.addEventListener("input", () => hd.layer(Number(this.layer.value)));
    this.tau.addEventListener("input", () => hd.tau(Number(this.tau.value)));
    this.metric.addEventListener("change", () => hd.metric(this.metric.value as MetricName));
    this.target.addEventListener("change", () => hd.target(Number(this.target.value)));
    this.png.addEventListener("click", () => hd.png());
  }

  setData(d: LensData): void {
    this.layer.max = String(d.R - 1);
    const G = d.meta.tau_grid?.length ?? 0;
    this.tau.max = String(Math.max(0, G - 1));
    this.tau.disabled = !d.projGrid || G === 0;
    if (this.metric.options.length !== METRICS.length) {
      // metrics registered in Python at run time arrive with the payload
      this.metric.replaceChildren(...METRICS.map((m) => h("option", { value: m.name, text: m.label })));
    }
    for (const o of Array.from(this.metric.options)) {
      o.disabled = !available(d, o.value as MetricName);
      const why = lackedReason(d, o.value as MetricName); // the backend cannot give it: greyed, with the reason
      const label = metricSpec(o.value)?.label ?? o.value;
      o.textContent = why ? `${label} (unavailable)` : label;
      o.title = why;
    }
    this.target.replaceChildren(...d.meta.targets.map((t, i) => h("option", { value: i, text: visible(t) })));
  }

  showLayer(d: LensData, layer: number): void {
    this.layer.value = String(layer);
    const lab = rowLabel(d.meta, layer);
    this.layerOut.textContent = lab;
    this.layer.setAttribute("aria-valuetext", `${lab} (${d.meta.hook_names[layer] ?? ""})`);
    this.layer.title = d.meta.hook_names[layer] ?? lab;
  }

  /** idx = grid index shown (null: the payload's exact τ). */
  showTau(d: LensData, idx: number | null): void {
    const c = tauChoice(d.meta, idx);
    this.tau.value = String(c.idx);
    const text = `${fmt(c.tau, 3)} → k = ${c.k} / ${d.meta.d_model}`;
    this.tauOut.textContent = text;
    this.tau.setAttribute("aria-valuetext", text);
  }

  showMetric(m: MetricName, targetVisible: boolean, target: number): void {
    this.metric.value = m;
    this.targetGroup.hidden = !targetVisible;
    this.target.value = String(target);
  }
}
