// The steering panel of a ResidWidget view (opened by the toolbar's "Steer" toggle) and the before |
// after | difference switch above the heatmap. The panel's controls make one `steer` spec (protocol.json
// `traits.steer.fields`); a change goes to Python as the ONE edit message (`changes: {steer}`), debounced
// like the editor's edits; Python checks it (payload/contract.py) and answers with the after payload.
// Continuations are shown as text (textContent), never HTML.

import { h } from "./dom";
import { debounce } from "./dom";
import { EDIT_DEBOUNCE_MS } from "./edits";
import { fmt } from "./metrics";
import { TRAITS } from "./protocol";
import { STEER_MODES, type SteerMode } from "./steerdata";
import "./steer.css";

/** A steering spec as the `steer` trait holds it (protocol.json `traits.steer.fields`). */
export interface SteerSpec {
  on: boolean;
  source: "unembed" | "jacobian" | "writer" | "named";
  token: string;
  writer: string;
  writer_pos: number;
  name: string;
  layers: number[];
  positions: "all" | "from" | "at";
  position: number;
  alpha: number;
  norm_match: boolean;
  n_continue: number;
}

/** What Python sent for the panel (`_steer_info`). */
export interface SteerInfo {
  directions?: string[];
  direction?: { name?: string; source?: string; layers?: number[]; positions?: number[] | null; alpha?: number; formula?: string };
  continuation?: { n?: number; before?: string; after?: string };
  /** the after run is being computed (its progress 0..1) */
  computing?: boolean;
  progress?: number;
}

const FIELDS = (TRAITS as unknown as { steer: { fields: Record<string, { default: unknown; abs_max?: number; max?: number }> } }).steer.fields;
/** |α| the contract accepts (protocol.json `traits.steer.fields.alpha.abs_max`): the typed α field's range. */
export const ALPHA_ABS_MAX = Number(FIELDS.alpha.abs_max ?? 10000);
export const FORMULA = { raw: "h ← h + α·v", norm: "h ← h + α·median‖h‖·v/‖v‖" };
const SOURCES: [SteerSpec["source"], string][] = [
  ["unembed", "token unembedding W_U[:, t]"],
  ["jacobian", "token Jacobian-lens vector J_rᵀ W_U[:, t]"],
  ["writer", "attribution writer (L{l}H{h} or {l}_mlp_out)"],
  ["named", "named direction (add_direction)"],
];
/** The slider's span (fine control near 0); larger |α|, up to ALPHA_ABS_MAX, is typed. */
const SLIDER_MAX = Math.min(20, ALPHA_ABS_MAX);

export function defaultSpec(): SteerSpec {
  return Object.fromEntries(Object.entries(FIELDS).map(([k, f]) => [k, structuredClone(f.default)])) as unknown as SteerSpec;
}

/** "1", "1,3", "1-3" -> layers; null when the text is not that. */
export function parseLayers(text: string): number[] | null {
  const out: number[] = [];
  for (const part of text.split(",").map((s) => s.trim()).filter(Boolean)) {
    const m = /^(-?\d+)(?:\s*[-–]\s*(\d+))?$/.exec(part);
    if (!m) return null;
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    for (let l = a; l <= b && out.length <= 256; l++) out.push(l);
  }
  return out.length ? out : null;
}

export interface SteerHandlers {
  /** a spec to send (already debounced) */
  send(spec: SteerSpec): void;
  /** the heatmap's mode changed */
  mode(m: SteerMode): void;
  /** the pinned cell's position (null: none) */
  pinned(): number | null;
  /** the widget's lens */
  lens(): string;
}

function field(label: string, ...inputs: HTMLElement[]): HTMLLabelElement {
  return h("label", { class: "rw-steer-field" }, h("span", { class: "rw-label", text: label }), ...inputs);
}

const TOGGLE_TITLE = "Steering panel: add a direction to the residual stream and compare the lens before and after";

export class SteerPanel {
  readonly el: HTMLDivElement;
  readonly toggle: HTMLButtonElement;
  readonly switcher: HTMLDivElement;
  readonly on = h("input", { type: "checkbox", class: "rw-steer-on" });
  readonly source = h("select", { class: "rw-steer-source" });
  readonly token = h("input", { type: "text", class: "rw-steer-token", spellcheck: "false", placeholder: "e.g. ␣Paris" });
  readonly writer = h("input", { type: "text", class: "rw-steer-writer", spellcheck: "false", placeholder: "L0H1 or 1_mlp_out" });
  readonly writerPos = h("select", { class: "rw-steer-writer-pos" });
  readonly name = h("select", { class: "rw-steer-name" });
  readonly layers = h("input", { type: "text", class: "rw-steer-layers", spellcheck: "false", placeholder: "1 or 1,2 or 1-3" });
  readonly positions = h("select", { class: "rw-steer-positions" });
  readonly position = h("input", { type: "number", class: "rw-steer-position", min: 0, step: 1, value: 0 });
  readonly alpha = h("input", { type: "range", class: "rw-steer-alpha", min: -SLIDER_MAX, max: SLIDER_MAX, step: 0.25, value: 0 });
  readonly alphaTyped = h("input", { type: "number", class: "rw-steer-alpha-typed", min: -ALPHA_ABS_MAX, max: ALPHA_ABS_MAX, step: "any", value: 0,
    title: `α: type any value from −${ALPHA_ABS_MAX} to ${ALPHA_ABS_MAX} (the slider covers ±${SLIDER_MAX})`, "aria-label": "α" });
  /** "after: computing… 40 %" while the steered run is computed */
  readonly pending = h("span", { class: "rw-steer-pending", role: "status", hidden: true });
  readonly norm = h("select", { class: "rw-steer-norm" });
  readonly formula = h("code", { class: "rw-steer-formula" });
  readonly nContinue = h("input", { type: "number", class: "rw-steer-n", min: 0, max: Number(FIELDS.n_continue.max ?? 64), step: 1, value: 0 });
  readonly note = h("div", { class: "rw-steer-note", "aria-live": "polite" });
  readonly before = h("div", { class: "rw-steer-text rw-steer-text-before" });
  readonly after = h("div", { class: "rw-steer-text rw-steer-text-after" });
  private readonly modeButtons = new Map<SteerMode, HTMLButtonElement>();
  private readonly debounced = debounce(() => this.sendNow(), EDIT_DEBOUNCE_MS);
  private spec: SteerSpec = defaultSpec();
  mode: SteerMode = "after";

  constructor(private readonly hd: SteerHandlers) {
    this.toggle = h("button", { class: "rw-steer-toggle", type: "button", "aria-pressed": "false", text: "Steer", title: TOGGLE_TITLE });
    for (const [v, t] of SOURCES) this.source.append(h("option", { value: v, text: t }));
    for (const [v, t] of [["all", "all positions"], ["from", "from position…"], ["at", "the pinned position"]]) this.positions.append(h("option", { value: v, text: t }));
    for (const [v, t] of [["raw", `raw: ${FORMULA.raw}`], ["norm", `norm-matched: ${FORMULA.norm}`]]) this.norm.append(h("option", { value: v, text: t }));
    for (const [v, t] of [["-1", "mean over positions"], ["at", "at the pinned position"]]) this.writerPos.append(h("option", { value: v, text: t }));
    this.switcher = this.buildSwitch();
    this.el = this.buildPanel();
    this.toggle.addEventListener("click", () => this.open(this.el.hidden));
    const change = () => this.changed();
    for (const e of [this.on, this.source, this.writerPos, this.name, this.positions, this.norm]) e.addEventListener("change", change);
    for (const e of [this.token, this.writer, this.layers, this.position, this.nContinue]) e.addEventListener("input", change);
    this.alpha.addEventListener("input", () => {
      this.alphaTyped.value = this.alpha.value;
      this.changed();
    });
    this.alphaTyped.addEventListener("input", () => {
      const v = Number(this.alphaTyped.value);
      if (this.alphaTyped.value.trim() !== "" && Number.isFinite(v)) this.alpha.value = String(Math.max(-SLIDER_MAX, Math.min(SLIDER_MAX, v)));
      this.changed();
    });
    this.setSpec(this.spec);
  }

  private buildSwitch(): HTMLDivElement {
    const el = h("div", { class: "rw-steer-switch", role: "group", "aria-label": "steering view", hidden: true });
    for (const m of STEER_MODES) {
      const b = h("button", { type: "button", class: `rw-steer-mode rw-steer-mode-${m}`, "aria-pressed": String(m === this.mode), text: m });
      b.addEventListener("click", () => this.setMode(m, true));
      this.modeButtons.set(m, b);
      el.append(b);
    }
    el.append(this.pending);
    return el;
  }

  private buildPanel(): HTMLDivElement {
    return h(
      "div",
      { class: "rw-steer", hidden: true },
      h("div", { class: "rw-steer-row" }, field("steering on", this.on), field("direction", this.source),
        field("token", this.token), field("writer", this.writer, this.writerPos), field("name", this.name)),
      h("div", { class: "rw-steer-row" }, field("layers", this.layers), field("positions", this.positions, this.position),
        field("α", this.alpha, this.alphaTyped), field("norm", this.norm), this.formula),
      h("div", { class: "rw-steer-row" }, field("continue (tokens)", this.nContinue), this.note),
      h("div", { class: "rw-steer-texts" },
        h("div", { class: "rw-steer-col" }, h("div", { class: "rw-label", text: "continuation before" }), this.before),
        h("div", { class: "rw-steer-col" }, h("div", { class: "rw-label", text: "continuation after" }), this.after)),
    );
  }

  open(on: boolean): void {
    this.el.hidden = !on;
    this.toggle.setAttribute("aria-pressed", String(on));
  }

  setMode(m: SteerMode, local: boolean): void {
    this.mode = m;
    for (const [k, b] of this.modeButtons) b.setAttribute("aria-pressed", String(k === m));
    if (local) this.hd.mode(m);
  }

  /** Is there an after payload to switch to (or one being computed)? */
  showSwitch(on: boolean): void {
    this.switcher.hidden = !on;
  }

  /** The after run is being computed (`progress` 0..1, null: not known yet): say so next to the switch; `stale`:
   *  the view shows the last after run meanwhile, `none`: it shows the plain run meanwhile, `streaming`: the after
   *  run as far as it has streamed. */
  showPending(busy: boolean, progress: number | null, shows: "stale" | "none" | "before" | "streaming"): void {
    this.pending.hidden = !busy;
    if (!busy) return void (this.pending.textContent = "");
    const pct = progress === null ? "" : ` ${Math.round(progress * 100)} %`;
    const meanwhile = shows === "stale" ? " · shown: the last after run (stale)" : shows === "none" ? " · shown meanwhile: before"
      : shows === "streaming" ? " · shown as it streams" : "";
    this.pending.textContent = `after: computing…${pct}${meanwhile}`;
  }

  /** Is steering on (the trait's spec, or the checkbox just ticked)? */
  get isOn(): boolean {
    return this.on.checked || this.spec.on;
  }

  /** The trait's value (Python's): shown unless the user is mid-change. */
  setSpec(raw: unknown): void {
    if (this.debounced.pending()) return;
    const s = { ...defaultSpec(), ...(raw && typeof raw === "object" ? (raw as Partial<SteerSpec>) : {}) };
    this.spec = s;
    this.on.checked = s.on;
    this.source.value = s.source;
    this.token.value = s.token;
    this.writer.value = s.writer;
    this.writerPos.value = s.writer_pos < 0 ? "-1" : "at";
    this.layers.value = s.layers.join(",");
    this.positions.value = s.positions === "at" ? "at" : s.positions;
    this.position.value = String(s.position);
    this.alpha.value = String(Math.max(-SLIDER_MAX, Math.min(SLIDER_MAX, s.alpha)));
    this.alphaTyped.value = String(s.alpha);
    this.norm.value = s.norm_match ? "norm" : "raw";
    this.nContinue.value = String(s.n_continue);
    this.showControls();
  }

  setInfo(info: SteerInfo): void {
    const names = info.directions ?? [];
    const keep = this.name.value || this.spec.name;
    this.name.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    if (!names.length) this.name.append(h("option", { value: "", text: "none: w.add_direction(name, v)" }));
    this.name.value = names.includes(keep) ? keep : names[0] ?? "";
    const c = info.continuation ?? {};
    this.before.textContent = c.before ?? "";
    this.after.textContent = c.after ?? "";
    this.before.title = this.after.title = c.n ? `${c.n} greedy tokens` : "set continue (tokens) to see them";
  }

  /** The backend refuses interventions (`message`; "" = it does not): the toggle is disabled and says why. */
  setRefused(message: string): void {
    this.toggle.disabled = !!message;
    this.toggle.title = message ? `Steering is unavailable: ${message}` : TOGGLE_TITLE;
    this.toggle.dataset.refused = String(!!message);
    if (message && !this.el.hidden) this.open(false);
  }

  setStatic(on: boolean): void {
    for (const e of [this.on, this.source, this.token, this.writer, this.writerPos, this.name, this.layers, this.positions,
      this.position, this.alpha, this.alphaTyped, this.norm, this.nContinue]) e.disabled = on;
  }

  /** Which inputs apply to the chosen source / positions; the formula of the norm mode. */
  private showControls(): void {
    const src = this.source.value;
    const jac = this.source.querySelector<HTMLOptionElement>('option[value="jacobian"]');
    if (jac) jac.disabled = this.hd.lens() !== "jacobian" && src !== "jacobian";
    (this.token.parentElement as HTMLElement).hidden = !(src === "unembed" || src === "jacobian");
    (this.writer.parentElement as HTMLElement).hidden = src !== "writer";
    (this.name.parentElement as HTMLElement).hidden = src !== "named";
    this.position.hidden = this.positions.value !== "from";
    this.formula.textContent = this.norm.value === "norm" ? FORMULA.norm : FORMULA.raw;
  }

  /** The controls' spec, or a reason it cannot be sent. */
  read(): SteerSpec | string {
    const layers = parseLayers(this.layers.value);
    if (!layers) return "layers: a layer number, a list (1,2) or a range (1-3)";
    const pinned = this.hd.pinned();
    const where = this.positions.value as SteerSpec["positions"];
    if ((where === "at" || this.writerPos.value === "at") && pinned === null) return "pin a cell first (click it): its position is the one used";
    const position = where === "at" ? (pinned as number) : Math.max(0, Math.round(Number(this.position.value) || 0));
    // a number out of the contract's range goes to Python, whose check names the limits in the banner
    const alpha = this.alphaTyped.value.trim() === "" ? NaN : Number(this.alphaTyped.value);
    if (!Number.isFinite(alpha)) return `α: type a number from −${ALPHA_ABS_MAX} to ${ALPHA_ABS_MAX}`;
    return {
      on: this.on.checked,
      source: this.source.value as SteerSpec["source"],
      token: this.token.value,
      writer: this.writer.value,
      writer_pos: this.writerPos.value === "at" ? (pinned as number) : -1,
      name: this.name.value,
      layers,
      positions: where,
      position,
      alpha,
      norm_match: this.norm.value === "norm",
      n_continue: Math.max(0, Math.min(Number(FIELDS.n_continue.max ?? 64), Math.round(Number(this.nContinue.value) || 0))),
    };
  }

  /** The pinned cell moved: a spec that uses its position follows it (when steering is on). */
  pinnedChanged(): void {
    if (this.on.checked && (this.positions.value === "at" || (this.source.value === "writer" && this.writerPos.value === "at"))) this.changed();
  }

  private changed(): void {
    this.showControls();
    const s = this.read();
    this.note.textContent = typeof s === "string" ? s : "";
    this.note.classList.toggle("rw-steer-problem", typeof s === "string");
    if (typeof s === "string") return this.debounced.cancel();
    this.debounced.call();
  }

  private sendNow(): void {
    const s = this.read();
    if (typeof s === "string") return;
    this.spec = s;
    this.hd.send(s);
  }

  /** What ran (Python's description of the after payload), for the note line. */
  describe(info: SteerInfo): void {
    const d = info.direction;
    if (!d || this.note.classList.contains("rw-steer-problem")) return;
    const where = d.positions == null ? "all positions" : d.positions.length === 1 ? `position ${d.positions[0]}` : `positions ${d.positions[0]}…${d.positions[d.positions.length - 1]}`;
    this.note.textContent = `ran: ${d.source} “${d.name}” at layers ${(d.layers ?? []).join(",")}, ${where}, α = ${fmt(d.alpha ?? NaN, 3)} (${d.formula ?? ""})`;
  }

  dispose(): void {
    this.debounced.cancel();
  }
}
