// The Writers panel inside the widget: who wrote the pinned cell (direct logit attribution, from
// writers.ts). SVG drawn here (no chart library), sized to the panel's width, --jp-* colours, every
// string through textContent. Parts (stable class names, used by the tests):
//   .rw-writers[data-row][data-pos][data-seq][data-state]   the panel (state: loading | painted | error)
//   .rw-writers-top (.rw-writers-title, .rw-writers-hide), .rw-writers-sum, .rw-writers-error
//   .rw-writers-bars     the top writers by |value|, sorted by value: rect.rw-writers-bar[data-label][data-value],
//                        text.rw-writers-label, text.rw-writers-value
//   .rw-writers-heads    layer x head grid: rect.rw-writers-head[data-layer][data-head][data-value]
//   .rw-writers-layers   layer x {attn, MLP} strip: rect.rw-writers-layer[data-layer][data-kind][data-value]
//   .rw-writers-select   one writer at every position (off by default; fetched on demand), drawn in
//   .rw-writers-positions: rect.rw-writers-pos[data-pos][data-value]
//   .rw-writers-tip      hover: the exact value and its label

import { rowName, tokenText, type LensData } from "./codecs";
import { RDBU, css, sample } from "./colors";
import { h } from "./dom";
import type { Cell } from "./heatmap";
import { StaleError } from "./rpc";
import { visible, truncate } from "./text";
import { WritersClient, type WritersCell } from "./writers";
import "./writers.css";

/** how many writers the bar chart shows (the largest |value|) */
export const TOP_WRITERS = 12;
const NS = "http://www.w3.org/2000/svg";
const ROW_H = 18;

type Attrs = Record<string, string | number>;
function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** The value's colour on the heatmap's diverging map (blue raises, red lowers), symmetric around 0. */
function colour(v: number, max: number): string {
  const c = sample(RDBU, 0.5 + (max > 0 ? v / (2 * max) : 0));
  return c ? css(c) : "transparent";
}

function absMax(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) if (Number.isFinite(xs[i])) m = Math.max(m, Math.abs(xs[i]));
  return m;
}

/** The exact value as shown on hover (float32: 7 significant digits). */
export function exact(v: number): string {
  return Number.isFinite(v) ? v.toPrecision(7) : "n/a (not written yet at this row)";
}

/** Indices of the `k` largest |values| (NaN skipped), sorted by value, largest first (stable, as
 *  Python's `top_by_magnitude`). */
export function topWriters(values: Float32Array, k: number): number[] {
  const idx: number[] = [];
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i])) idx.push(i);
  idx.sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]));
  return idx.slice(0, k).sort((a, b) => values[b] - values[a]);
}

export class WritersPanel {
  readonly el = h("div", { class: "rw-writers", hidden: true, "aria-live": "polite" });
  private readonly title = h("div", { class: "rw-writers-title" });
  private readonly sum = h("div", { class: "rw-writers-sum" });
  private readonly error = h("div", { class: "rw-writers-error", role: "alert", hidden: true });
  private readonly charts = h("div", { class: "rw-writers-charts" });
  private readonly select = h("select", { class: "rw-writers-select", "aria-label": "one writer at every position" });
  private readonly posBox = h("div", { class: "rw-writers-posbox" });
  private readonly tip = h("div", { class: "rw-writers-tip", hidden: true });
  private d: LensData | null = null;
  private cell: Cell | null = null;
  private key = "";
  private shown: WritersCell | null = null;
  private collapsed = false;
  private chosen = ""; // the writer label of the every-position view ("" = off)
  private width = 0;
  private readonly ro: ResizeObserver | null;

  constructor(readonly client: WritersClient) {
    const hide = h("button", { class: "rw-writers-hide", type: "button", text: "hide (w)", title: "Hide the writers panel (w on the heatmap shows it again)" });
    hide.addEventListener("click", () => this.toggle());
    const head = h("div", { class: "rw-writers-top" }, this.title, hide);
    const pick = h("label", { class: "rw-writers-pick" }, h("span", { text: "one writer at every position: " }), this.select);
    this.select.addEventListener("change", () => {
      this.chosen = this.select.value;
      this.paintPositions();
    });
    this.el.append(head, this.sum, this.error, this.charts, pick, this.posBox, this.tip);
    this.el.addEventListener("mousemove", (e) => this.hover(e));
    this.el.addEventListener("mouseleave", () => (this.tip.hidden = true));
    this.ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => this.resized()) : null;
    this.ro?.observe(this.el);
  }

  /** The pinned cell (null: unpinned, the panel closes) of payload `d`. A new payload seq (an edit)
   *  asks again for the same cell of the new analysis; Python answers once it can compute it. */
  show(d: LensData | null, c: Cell | null): void {
    this.client.setSeq(d ? d.meta.seq : -1);
    const prev = this.cell;
    this.d = d;
    this.cell = c;
    if (!d || !c) {
      this.key = "";
      this.shown = null;
      this.el.hidden = true;
      return;
    }
    if (!prev || prev.row !== c.row || prev.pos !== c.pos) this.collapsed = false; // a new pin opens it
    const key = `${d.meta.seq}:${c.row}:${c.pos}`;
    this.el.hidden = this.collapsed;
    if (key === this.key) return;
    this.key = key;
    this.el.dataset.row = String(c.row);
    this.el.dataset.pos = String(c.pos);
    this.el.dataset.seq = String(d.meta.seq);
    this.title.textContent = `Writers of ${rowName(d.meta, c.row)}, position ${c.pos} (${visible(tokenText(d, d.tokenIds[c.pos]))})`;
    const refused = d.meta.refused?.attribution;
    if (refused) return this.fail(refused); // the backend cannot attribute: say so without asking
    const hit = this.client.cachedCell(d.meta.seq, c.row, c.pos);
    if (hit) return this.paint(hit);
    this.setState("loading", "computing the attribution…");
    this.client.cell(d.meta.seq, c.row, c.pos).then(
      (cell) => key === this.key && this.paint(cell),
      (e: Error) => key === this.key && !(e instanceof StaleError) && this.fail(e.message),
    );
  }

  /** `w` on the heatmap: hide / show the panel of the pinned cell. Returns whether it is shown. */
  toggle(): boolean {
    if (!this.cell) return false;
    this.collapsed = !this.collapsed;
    this.el.hidden = this.collapsed;
    if (!this.collapsed) this.resized();
    return !this.collapsed;
  }

  get open(): boolean {
    return !!this.cell && !this.el.hidden;
  }

  private setState(state: string, text: string): void {
    this.el.dataset.state = state;
    this.sum.textContent = text;
    this.error.hidden = state !== "error";
  }

  private fail(message: string): void {
    this.shown = null;
    this.charts.replaceChildren();
    this.posBox.replaceChildren();
    this.setState("error", "");
    this.error.textContent = `Writers: ${message}`;
  }

  private paint(cell: WritersCell): void {
    this.shown = cell;
    let total = cell.constant;
    for (const v of cell.values) if (Number.isFinite(v)) total += v;
    this.setState("painted", "");
    this.sum.textContent =
      `direct logit attribution to ${cell.direction} (pre-cap logits, final norm's scale frozen): ` +
      `Σ writers + constant (${cell.constant.toFixed(3)}) = ${total.toFixed(3)}; the lens: ${cell.lensValue.toFixed(3)}`;
    this.fillSelect(cell);
    this.width = 0;
    this.resized();
  }

  private resized(): void {
    const w = Math.floor(this.el.clientWidth);
    if (!this.shown || this.el.hidden || w <= 0 || w === this.width) return;
    this.width = w;
    this.drawCharts(this.shown, w - 18);
    this.paintPositions();
  }

  private drawCharts(cell: WritersCell, width: number): void {
    const labels = this.client.labels ?? [];
    const bars = this.barChart(cell, labels, Math.min(width, 460));
    const heads = this.headGrid(cell, Math.min(width, 420));
    const layers = this.layerStrip(cell, Math.min(width, 420));
    this.charts.replaceChildren(
      chart("top writers (largest |value|), sorted", bars, "rw-writers-bars"),
      chart("heads: layer × head", heads, "rw-writers-heads"),
      chart("layers: attention and MLP output", layers, "rw-writers-layers"),
    );
  }

  private barChart(cell: WritersCell, labels: string[], width: number): SVGSVGElement {
    const order = topWriters(cell.values, TOP_WRITERS);
    const labelW = 78;
    const valueW = 62;
    const plotW = Math.max(40, width - labelW - valueW);
    let lo = 0;
    let hi = 0;
    for (const i of order) (lo = Math.min(lo, cell.values[i])), (hi = Math.max(hi, cell.values[i]));
    const span = hi - lo || 1;
    const x = (v: number) => labelW + ((v - lo) / span) * plotW;
    const m = absMax(cell.values);
    const height = order.length * ROW_H + 4;
    const s = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    s.append(svg("line", { class: "rw-writers-axis", x1: x(0), x2: x(0), y1: 0, y2: height }));
    order.forEach((i, k) => {
      const v = cell.values[i];
      const y = k * ROW_H + 2;
      const name = labels[i] ?? `#${i}`;
      const [a, b] = [x(Math.min(0, v)), x(Math.max(0, v))];
      const tipText = `${name}: ${exact(v)}`;
      const attrs = { x: a, y: y + 2, width: Math.max(1, b - a), height: ROW_H - 5, fill: colour(Math.sign(v) * Math.max(Math.abs(v), 0.35 * m), m) };
      const bar = svg("rect", { ...attrs, class: "rw-writers-bar", "data-label": name, "data-value": String(v), "data-tip": tipText, "data-writer": i });
      s.append(bar);
      s.append(svg("text", { class: "rw-writers-label", x: labelW - 6, y: y + ROW_H - 6, "text-anchor": "end", "data-tip": tipText }, truncate(name, 11)));
      s.append(svg("text", { class: "rw-writers-value", x: width - 2, y: y + ROW_H - 6, "text-anchor": "end", "data-tip": tipText }, v.toFixed(3)));
      bar.addEventListener("click", () => this.choose(name));
    });
    return s;
  }

  private headGrid(cell: WritersCell, width: number): SVGSVGElement {
    const L = cell.nLayers;
    const H = cell.nHeads;
    const labels = this.client.labels ?? [];
    const grid = new Float32Array(L * H).fill(NaN);
    const at = new Map<string, number>();
    labels.forEach((name, i) => at.set(name, i));
    for (let l = 0; l < L; l++) for (let hd = 0; hd < H; hd++) grid[l * H + hd] = cell.values[at.get(`L${l}H${hd}`) ?? -1] ?? NaN;
    return matrix(grid, L, H, width, (r) => `L${r}`, (c) => `H${c}`, (r, c, v) => ({
      class: "rw-writers-head", "data-layer": r, "data-head": c, "data-value": String(v), "data-tip": `L${r}H${c}: ${exact(v)}`,
    }));
  }

  private layerStrip(cell: WritersCell, width: number): SVGSVGElement {
    const L = cell.nLayers;
    const grid = new Float32Array(2 * L);
    for (let l = 0; l < L; l++) (grid[l] = cell.strip[l * 2]), (grid[L + l] = cell.strip[l * 2 + 1]);
    const kinds = ["attn", "MLP"];
    const names = (r: number, c: number) => (r === 0 ? `${c}_attn_out` : `${c}_mlp_out`);
    return matrix(grid, 2, L, width, (r) => kinds[r], (c) => String(c), (r, c, v) => ({
      class: "rw-writers-layer", "data-layer": c, "data-kind": kinds[r], "data-value": String(v), "data-tip": `${names(r, c)}: ${exact(v)}`,
    }));
  }

  private fillSelect(cell: WritersCell): void {
    const labels = this.client.labels ?? [];
    const options = [h("option", { value: "", text: "off" })];
    labels.forEach((name, i) => Number.isFinite(cell.values[i]) && options.push(h("option", { value: name, text: name })));
    this.select.replaceChildren(...options);
    if (!labels.includes(this.chosen) || !Number.isFinite(cell.values[labels.indexOf(this.chosen)])) this.chosen = "";
    this.select.value = this.chosen;
  }

  /** A bar clicked: that writer at every position. */
  private choose(name: string): void {
    this.chosen = name;
    this.select.value = name;
    this.paintPositions();
  }

  private paintPositions(): void {
    const cell = this.shown;
    const d = this.d;
    const labels = this.client.labels ?? [];
    const w = labels.indexOf(this.chosen);
    this.el.dataset.writer = this.chosen;
    if (!cell || !d || w < 0) return this.posBox.replaceChildren();
    const key = this.key;
    this.posBox.replaceChildren(h("div", { class: "rw-writers-note", text: `fetching ${this.chosen} at every position…` }));
    this.client.writer(cell.seq, cell.row, cell.pos, w).then(
      (values) => key === this.key && this.chosen === labels[w] && this.drawPositions(d, cell, labels[w], values),
      (e: Error) => key === this.key && !(e instanceof StaleError) && this.posBox.replaceChildren(h("div", { class: "rw-writers-note rw-writers-poserror", text: e.message })),
    );
  }

  private drawPositions(d: LensData, cell: WritersCell, name: string, values: Float32Array): void {
    const width = Math.max(120, (this.width || this.el.clientWidth) - 18);
    const T = values.length;
    const height = 96;
    const top = 6;
    const plotH = height - 22;
    const m = absMax(values) || 1;
    const y0 = top + plotH / 2;
    const bw = width / Math.max(1, T);
    const s = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    s.append(svg("line", { class: "rw-writers-axis", x1: 0, x2: width, y1: y0, y2: y0 }));
    for (let p = 0; p < T; p++) {
      const v = values[p];
      const len = Number.isFinite(v) ? (Math.abs(v) / m) * (plotH / 2) : 0;
      const tok = visible(tokenText(d, d.tokenIds[p]));
      s.append(svg("rect", {
        class: `rw-writers-pos${p === cell.pos ? " rw-writers-pos-pinned" : ""}`, x: p * bw, y: v >= 0 ? y0 - len : y0, width: Math.max(0.5, bw - (bw > 3 ? 1 : 0)),
        height: Math.max(0.5, len), fill: colour(v, m), "data-pos": p, "data-value": String(v), "data-tip": `${name} at position ${p} (${tok}): ${exact(v)}`,
      }));
    }
    const every = Math.max(1, Math.ceil(48 / bw));
    for (let p = 0; p < T; p += every) s.append(svg("text", { class: "rw-writers-tick", x: p * bw + bw / 2, y: height - 3, "text-anchor": "middle" }, String(p)));
    this.posBox.replaceChildren(chart(`${name} at every position (${rowName(d.meta, cell.row)}, same direction)`, s, "rw-writers-positions"));
  }

  private hover(e: MouseEvent): void {
    const t = e.target instanceof Element ? e.target.closest("[data-tip]") : null;
    if (!t) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = t.getAttribute("data-tip") ?? "";
    this.tip.hidden = false;
    const box = this.el.getBoundingClientRect();
    const tw = this.tip.offsetWidth;
    const th = this.tip.offsetHeight;
    const x = Math.min(e.clientX - box.left + 12, box.width - tw - 4);
    const y = e.clientY - box.top + 14 + th > box.height ? e.clientY - box.top - th - 8 : e.clientY - box.top + 14;
    this.tip.style.left = `${Math.max(2, x)}px`;
    this.tip.style.top = `${Math.max(2, y)}px`;
  }

  dispose(): void {
    this.ro?.disconnect();
    this.client.dispose();
  }
}

function chart(caption: string, body: SVGSVGElement, cls: string): HTMLDivElement {
  return h("div", { class: `rw-writers-chart ${cls}` }, h("div", { class: "rw-writers-caption", text: caption }), body);
}

/** A rows x cols grid of coloured cells (NaN: not written yet, neutral) with thinned labels that never
 *  overlap: a row label every ceil(12 / cell height) rows, a column label every ceil(text width / cell width). */
function matrix(
  grid: Float32Array, rows: number, cols: number, width: number,
  rowLabel: (r: number) => string, colLabel: (c: number) => string, attrs: (r: number, c: number, v: number) => Attrs,
): SVGSVGElement {
  const left = 40;
  const topH = 14;
  const cw = Math.max(4, Math.min(22, Math.floor((width - left) / Math.max(1, cols))));
  const ch = Math.max(8, Math.min(18, cw));
  const w = left + cw * cols;
  const height = topH + ch * rows + 2;
  const m = absMax(grid);
  const s = svg("svg", { width: w, height, viewBox: `0 0 ${w} ${height}`, role: "img" });
  const colEvery = Math.max(1, Math.ceil((7 * Math.max(...Array.from({ length: cols }, (_, c) => colLabel(c).length)) + 4) / cw));
  for (let c = 0; c < cols; c += colEvery) s.append(svg("text", { class: "rw-writers-tick", x: left + c * cw + cw / 2, y: topH - 3, "text-anchor": "middle" }, colLabel(c)));
  const rowEvery = Math.max(1, Math.ceil(12 / ch));
  for (let r = 0; r < rows; r++) {
    if (r % rowEvery === 0) s.append(svg("text", { class: "rw-writers-tick", x: left - 4, y: topH + r * ch + ch / 2 + 4, "text-anchor": "end" }, rowLabel(r)));
    for (let c = 0; c < cols; c++) {
      const v = grid[r * cols + c];
      const na = !Number.isFinite(v);
      s.append(svg("rect", { x: left + c * cw, y: topH + r * ch, width: cw - 1, height: ch - 1, fill: na ? "transparent" : colour(v, m), ...attrs(r, c, v), ...(na ? { "data-na": "1" } : {}) }));
    }
  }
  return s;
}
