// The heatmap: rows = residual rows (embed, 0, 1, ...), columns = token positions.
//
// One canvas holds the cells (drawn once per data/metric/τ/size change: a T×R ImageData scaled up
// without smoothing, then grid lines and top-1 token text where cells are wide enough); a second,
// transparent overlay canvas on top holds the per-interaction marks (hovered and pinned cell) so
// hover never repaints the cells; the current layer is a band element moved by a CSS transform, so
// a layer step repaints neither canvas (the cells do not change with the layer). The canvas
// scrolls horizontally.
//
// Canvas backing stores are only (re)sized when their size really changes (assigning width or
// height clears a canvas, even to the same value), and every re-size is followed by a redraw.
// Theme colours (grid lines, text, band) are read from the --jp-* variables at draw time;
// `themeChanged()` redraws when they differ from the last draw.

import { rowLabel, tokenText, type LensData } from "./codecs";
import { css, sample, textOn } from "./colors";
import { h } from "./dom";
import { cellPixels, valueAt, type MetricName, type Scale, type ViewOpts } from "./metrics";
import { TRAITS } from "./protocol";
import { truncate, visible } from "./text";
import "./narrow.css";

export interface Cell {
  row: number;
  pos: number;
}

export interface HeatmapHandlers {
  hover(cell: Cell | null): void;
  click(cell: Cell): void;
  /** arrow key on the focused heatmap: move the layer by `step` */
  step(step: number): void;
  /** Home / End on the focused heatmap: go to this row (0 or the last) */
  goto(row: number): void;
  unpin(): void;
  /** `w` on the focused heatmap: the Writers panel (writerspanel.ts) */
  writers?(): void;
  /** columns first..last are in view (after a scroll or a re-layout) */
  view(first: number, last: number): void;
}

const MIN_CELL = 6;
const ZOOMS = ["fit", "8", "12", "18", "24", "36"];

interface Palette {
  fg: string;
  bg: string;
}
/** the PNG's colours in every theme */
const LIGHT: Palette = { fg: "#111111", bg: "#ffffff" };

/** Greedy word wrap of `text` to `width` px in ctx's current font (a word longer than a line gets a line). */
function wrapText(ctx: CanvasRenderingContext2D, text: string, width: number): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      lines.push(line);
      line = word;
    } else line = next;
  }
  if (line) lines.push(line);
  return lines.length ? lines : [""];
}
const MAX_CELL = 72;
const AXIS_H = 18;
const MAX_CANVAS = 32_000; // px per side (browser limit ~32767)
const MAX_AREA = 120e6; // backing pixels

function cssVar(el: Element, name: string, fallback: string): string {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

/** Token text for a cell: whitespace made visible, but when it doesn't fit, the leading space
 *  marker is dropped first (" Bennet" -> "Benn…" rather than "␣Be…"). */
function cellLabel(s: string, maxChars: number): string {
  const full = visible(s);
  if (Array.from(full).length <= maxChars) return full;
  const trimmed = s.replace(/^ +/, "");
  return truncate(trimmed ? visible(trimmed) : full, maxChars);
}

export class Heatmap {
  readonly el: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  readonly overlay: HTMLCanvasElement;
  private readonly labels: HTMLDivElement;
  private readonly grid: HTMLDivElement;
  private readonly hint: HTMLSpanElement;
  private readonly zoom: HTMLSelectElement;
  private readonly emergenceNote: HTMLSpanElement;
  /** fixed cell width in CSS px, or null: fit the available width */
  private fixedCellW: number | null = null;
  private readonly scroller: HTMLDivElement;
  private readonly inner: HTMLDivElement;
  /** the current layer's row: an outline moved with a transform (no canvas repaint per step) */
  readonly band: HTMLDivElement;
  private labelEls: HTMLDivElement[] = [];

  private d: LensData | null = null;
  private metric: MetricName = TRAITS.metric.default;
  private opts: ViewOpts = { tauIdx: null, target: 0 };
  private scale: Scale | null = null;

  private cellW = 24;
  private rowH = 24;
  private pxScale = 1;
  private width = 0; // available CSS width of the scroller
  private layer = 0;
  private selected: Cell | null = null;
  private hovered: Cell | null = null;
  /** overlay rectangles drawn last time (CSS px), cleared before the next overlay draw */
  private dirty: [number, number, number, number][] = [];
  /** theme colours the cells were painted with */
  private themeKey = "";

  constructor(private readonly handlers: HeatmapHandlers) {
    this.canvas = h("canvas", { class: "rw-heatmap-canvas", role: "img", "aria-label": "logit lens heatmap" });
    this.overlay = h("canvas", { class: "rw-heatmap-overlay", "aria-hidden": "true" });
    this.band = h("div", { class: "rw-layer-band", "aria-hidden": "true" });
    this.inner = h("div", { class: "rw-heatmap-inner" }, this.canvas, this.band, this.overlay);
    this.scroller = h(
      "div",
      {
        class: "rw-heatmap-scroll",
        tabindex: 0,
        "aria-label": "heatmap: arrow keys change the layer, Home / End go to the first / last row, Escape unpins, w shows the writers",
      },
      this.inner,
    );
    this.labels = h("div", { class: "rw-row-labels", "aria-hidden": "true" });
    this.grid = h("div", { class: "rw-heatmap-grid" }, this.labels, this.scroller);
    // which keys work, on screen (they are the widget's while the heatmap or a slider has focus)
    this.hint = h("span", {
      class: "rw-keys-hint",
      text: "keys (click the heatmap or the layer slider first): ← → / ↑ ↓ layer · Home / End first / last row · Esc unpin · w writers",
    });
    // zoom: "fit" sizes cells to the width (6 px at least); a fixed width makes long prompts readable (it scrolls)
    this.zoom = h("select", { class: "rw-zoom", title: "Cell width: fit the output, or wider cells (the heatmap scrolls sideways)" });
    for (const z of ZOOMS) this.zoom.append(h("option", { value: z, text: z === "fit" ? "fit width" : `${z} px` }));
    this.zoom.addEventListener("change", this.onZoom);
    const zoomLabel = h("label", { class: "rw-label rw-zoom-group" }, "cell width ", this.zoom);
    const foot = h("div", { class: "rw-heatmap-foot" }, zoomLabel, this.hint);
    this.emergenceNote = h("span", { class: "rw-emergence-note", hidden: true,
      text: "◆ = the row from which the model's final top-1 stays in the lens's top-k" });
    foot.append(this.emergenceNote);
    this.el = h("div", { class: "rw-heatmap" }, this.grid, foot);

    this.overlay.addEventListener("mousemove", this.onMove);
    this.overlay.addEventListener("mouseleave", this.onLeave);
    this.overlay.addEventListener("click", this.onClick);
    this.scroller.addEventListener("keydown", this.onKey);
    this.scroller.addEventListener("scroll", this.onScroll, { passive: true });
  }

  private scrollQueued = false;
  private onScroll = () => {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      this.reportView();
    });
  };

  private reportView(): void {
    if (!this.d) return;
    const first = Math.floor(this.scroller.scrollLeft / this.cellW);
    const last = Math.ceil((this.scroller.scrollLeft + (this.scroller.clientWidth || this.width)) / this.cellW) - 1;
    this.handlers.view(Math.max(0, first), Math.min(this.d.T - 1, last));
  }

  /** New data, metric, τ or target: full redraw. */
  setData(d: LensData, metric: MetricName, opts: ViewOpts, scale: Scale): void {
    const shapeChanged = !this.d || this.d.R !== d.R || this.d.T !== d.T;
    this.d = d;
    this.metric = metric;
    this.opts = { ...opts };
    this.scale = scale;
    if (shapeChanged) this.buildLabels();
    this.layout();
    this.draw();
    this.drawOverlay();
    this.placeBand();
    this.reportView();
  }

  /** Layer step: move the band and the row-label highlight; neither canvas is touched. */
  setLayer(layer: number): void {
    if (layer === this.layer) return;
    this.labelEls[this.layer]?.classList.remove("rw-row-current");
    this.layer = layer;
    this.labelEls[layer]?.classList.add("rw-row-current");
    this.placeBand();
  }

  setSelected(cell: Cell | null): void {
    this.selected = cell;
    this.drawOverlay();
  }

  /** The available width may have changed: re-layout; redraw whenever the cell size or a canvas's
   *  backing store changed (re-sizing a canvas clears it). */
  resize(): void {
    if (!this.d) return;
    const width = this.scroller.clientWidth;
    if (width <= 0) return; // not attached / hidden: keep what is drawn
    if (this.layout()) {
      this.draw();
      this.drawOverlay();
      this.placeBand();
    }
    this.reportView();
  }

  /** Theme colours may have changed (JupyterLab theme switch, prefers-color-scheme): redraw
   *  when the colours the cells were painted with differ. Returns true when it redrew. */
  themeChanged(): boolean {
    if (!this.d || !this.scale) return false;
    if (this.currentThemeKey() === this.themeKey) return false;
    this.draw();
    this.drawOverlay();
    this.placeBand();
    return true;
  }

  private currentThemeKey(): string {
    return [getComputedStyle(this.el).color, cssVar(this.el, "--jp-layout-color1", "#fff"), cssVar(this.el, "--jp-brand-color1", "")].join("|");
  }

  /** Bounding box of a cell in client coordinates (for anchoring the tooltip). */
  cellRect(cell: Cell): DOMRect {
    const r = this.overlay.getBoundingClientRect();
    return new DOMRect(r.left + cell.pos * this.cellW, r.top + cell.row * this.rowH, this.cellW, this.rowH);
  }

  focus(): void {
    this.scroller.focus();
  }

  private buildLabels(): void {
    const d = this.d!;
    this.labels.replaceChildren();
    this.labelEls = Array.from({ length: d.R }, (_, r) => rowLabel(d.meta, r)).map((lab, r) => {
      const e = h("div", { class: "rw-row-label", text: lab, title: d.meta.hook_names[r] ?? lab });
      this.labels.append(e);
      return e;
    });
    this.labels.append(h("div", { class: "rw-row-label rw-axis-label", text: "pos" }));
    this.labelEls[this.layer]?.classList.add("rw-row-current");
  }

  /** Size cells and canvases to the available width. True when the cell size or a canvas's
   *  backing store changed (the canvases are then blank and must be redrawn). */
  private layout(): boolean {
    const d = this.d!;
    const avail = this.scroller.clientWidth || this.width || 640;
    this.width = avail;
    const before = `${this.cellW}x${this.rowH}`;
    this.cellW = this.fixedCellW ?? Math.max(MIN_CELL, Math.min(MAX_CELL, Math.floor(avail / d.T)));
    this.emergenceNote.hidden = !(d.emergence && this.cellW >= 14);
    this.rowH = d.R <= 14 ? 24 : d.R <= 26 ? 18 : d.R <= 50 ? 13 : 9;
    let changed = before !== `${this.cellW}x${this.rowH}`;
    const w = d.T * this.cellW;
    const hgt = d.R * this.rowH + AXIS_H;
    const dpr = window.devicePixelRatio || 1;
    this.pxScale = Math.max(0.25, Math.min(dpr, MAX_CANVAS / w, MAX_CANVAS / hgt, Math.sqrt(MAX_AREA / (w * hgt))));
    const bw = Math.round(w * this.pxScale);
    const bh = Math.round(hgt * this.pxScale);
    for (const c of [this.canvas, this.overlay]) {
      // assigning width/height clears the canvas even when the value is the same: only on change
      if (c.width !== bw) {
        c.width = bw;
        changed = true;
      }
      if (c.height !== bh) {
        c.height = bh;
        changed = true;
      }
      c.style.width = `${w}px`;
      c.style.height = `${hgt}px`;
    }
    if (changed) this.dirty = [];
    this.inner.style.width = `${w}px`;
    this.inner.style.height = `${hgt}px`;
    this.canvas.dataset.rows = String(d.R);
    this.canvas.dataset.cols = String(d.T);
    this.canvas.dataset.metric = this.metric;
    this.canvas.dataset.cellWidth = String(this.cellW);
    this.canvas.dataset.rowHeight = String(this.rowH);
    for (const e of this.labelEls) e.style.height = e.style.lineHeight = `${this.rowH}px`;
    const axis = this.labels.lastElementChild as HTMLElement | null;
    if (axis) axis.style.height = axis.style.lineHeight = `${AXIS_H}px`;
    return changed;
  }

  private font(px: number): string {
    const fam = cssVar(this.el, "--jp-code-font-family", "monospace");
    return `${px}px ${fam}`;
  }

  /** The theme's text and background colours (the screen; the PNG uses LIGHT in every theme). */
  private palette(): Palette {
    return { fg: getComputedStyle(this.el).color || "#000", bg: cssVar(this.el, "--jp-layout-color1", "#fff") };
  }

  /** Paint cells, grid and labels onto `ctx` (CSS px coordinates). Used for screen and PNG. */
  private paint(ctx: CanvasRenderingContext2D, pal: Palette = this.palette()): void {
    const d = this.d!;
    const s = this.scale!;
    const { cellW, rowH } = this;
    const gw = d.T * cellW;
    const gh = d.R * rowH;
    const { fg, bg } = pal;

    // "not applicable" cells (attn/MLP norm of the embed row) show this hatch-grey
    ctx.fillStyle = "rgba(128,128,128,0.18)";
    ctx.fillRect(0, 0, gw, gh);

    const img = new ImageData(cellPixels(d, this.metric, this.opts, s), d.T, d.R);
    const off = document.createElement("canvas");
    off.width = d.T;
    off.height = d.R;
    off.getContext("2d")!.putImageData(img, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, d.T, d.R, 0, 0, gw, gh);

    // grid lines in the page background colour
    ctx.fillStyle = bg;
    if (cellW >= 10) for (let p = 1; p < d.T; p++) ctx.fillRect(p * cellW - 0.5, 0, 1, gh);
    for (let r = 1; r < d.R; r++) ctx.fillRect(0, r * rowH - 0.5, gw, 1);

    // top-1 token text inside cells, where there is room (as in logit-lens figures)
    if (cellW >= 18 && rowH >= 12) {
      const fpx = Math.min(cellW >= 28 ? 11 : 10, rowH - 6);
      ctx.font = this.font(fpx);
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      const charW = ctx.measureText("M").width || fpx * 0.6;
      const maxChars = Math.max(1, Math.floor((cellW - 4) / charW));
      for (let r = 0; r < d.R; r++) {
        for (let p = 0; p < d.T; p++) {
          const c = sample(s.map, s.toT(valueAt(d, this.metric, r, p, this.opts)));
          ctx.fillStyle = c ? textOn(c) : fg;
          if (d.top1Id[r * d.T + p] < 0) continue; // not read yet
          const t = cellLabel(tokenText(d, d.top1Id[r * d.T + p]), maxChars);
          ctx.fillText(t, p * cellW + cellW / 2, r * rowH + rowH / 2 + 0.5, cellW - 2);
        }
      }
    }

    this.paintEmergence(ctx, fg, bg);

    // x axis: input tokens when wide, position numbers otherwise
    ctx.fillStyle = fg;
    ctx.font = this.font(10);
    ctx.textBaseline = "middle";
    ctx.textAlign = "center";
    const y = gh + AXIS_H / 2 + 1;
    if (cellW >= 30) {
      const charW = ctx.measureText("M").width || 6;
      const maxChars = Math.max(1, Math.floor((cellW - 3) / charW));
      for (let p = 0; p < d.T; p++) {
        const t = cellLabel(tokenText(d, d.tokenIds[p]), maxChars);
        ctx.fillText(t, p * cellW + cellW / 2, y, cellW - 2);
      }
    } else {
      const every = [1, 2, 5, 10, 20, 50, 100, 200, 500].find((n) => n * cellW >= 36) ?? 1000;
      for (let p = 0; p < d.T; p += every) ctx.fillText(String(p), p * cellW + cellW / 2, y);
    }
  }

  /** ◆ where the model's final top-1 emerges: the first row from which it stays in the lens's top-k. */
  private paintEmergence(ctx: CanvasRenderingContext2D, fg: string, bg: string): void {
    const d = this.d!;
    const { cellW, rowH } = this;
    if (d.emergence && rowH >= 8 && cellW >= 14) { // narrower cells: the tooltip says it (a mark would hide the colour)
      const sz = Math.max(2, Math.min(4, rowH / 4, cellW / 3));
      ctx.strokeStyle = bg;
      ctx.lineWidth = 1;
      ctx.fillStyle = fg;
      for (let p = 0; p < d.T; p++) {
        const r = d.emergence[p];
        if (r < 0) continue;
        const cx = (p + 1) * cellW - sz - 1.5; // top-right corner: clear of the centred text
        const cy = r * rowH + sz + 1.5;
        ctx.beginPath();
        ctx.moveTo(cx, cy - sz);
        ctx.lineTo(cx + sz, cy);
        ctx.lineTo(cx, cy + sz);
        ctx.lineTo(cx - sz, cy);
        ctx.closePath();
        ctx.fill();
        ctx.stroke();
      }
    }

  }

  private draw(): void {
    if (!this.d || !this.scale) return;
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    ctx.setTransform(this.pxScale, 0, 0, this.pxScale, 0, 0);
    this.paint(ctx);
    this.themeKey = this.currentThemeKey();
    this.canvas.dataset.theme = this.themeKey;
  }

  /** Hovered and pinned cell outlines: only the rectangles drawn last time are cleared. */
  private drawOverlay(): void {
    const ctx = this.overlay.getContext("2d");
    if (!ctx || !this.d) return;
    const d = this.d;
    const { cellW, rowH } = this;
    ctx.setTransform(this.pxScale, 0, 0, this.pxScale, 0, 0);
    for (const [x, y, w, hh] of this.dirty) ctx.clearRect(x, y, w, hh);
    this.dirty = [];
    const outline = (c: Cell, w: number) => {
      const x = c.pos * cellW;
      const y = c.row * rowH;
      ctx.lineWidth = w + 2;
      ctx.strokeStyle = "#000";
      ctx.strokeRect(x + 1, y + 1, cellW - 2, rowH - 2);
      ctx.lineWidth = w;
      ctx.strokeStyle = "#fff";
      ctx.strokeRect(x + 1, y + 1, cellW - 2, rowH - 2);
      this.dirty.push([x - 4, y - 4, cellW + 8, rowH + 8]);
    };
    if (this.hovered) outline(this.hovered, 1);
    if (this.selected && this.selected.row < d.R && this.selected.pos < d.T) outline(this.selected, 2);
  }

  /** Put the current-layer band over its row (a transform: no layout, no canvas repaint). */
  private placeBand(): void {
    const d = this.d;
    if (!d || this.layer < 0 || this.layer >= d.R) {
      this.band.hidden = true;
      return;
    }
    this.band.hidden = false;
    this.band.style.width = `${d.T * this.cellW}px`;
    this.band.style.height = `${this.rowH}px`;
    this.band.style.transform = `translateY(${this.layer * this.rowH}px)`;
    this.band.dataset.layer = String(this.layer);
  }

  private cellAt(e: MouseEvent): Cell | null {
    if (!this.d) return null;
    const r = this.overlay.getBoundingClientRect();
    const x = e.clientX - r.left;
    const y = e.clientY - r.top;
    const pos = Math.floor(x / this.cellW);
    const row = Math.floor(y / this.rowH);
    if (pos < 0 || pos >= this.d.T || row < 0 || row >= this.d.R) return null;
    return { row, pos };
  }

  private onMove = (e: MouseEvent) => {
    const c = this.cellAt(e);
    const same = c && this.hovered && c.row === this.hovered.row && c.pos === this.hovered.pos;
    if (same || (!c && !this.hovered)) return;
    this.hovered = c;
    this.drawOverlay();
    this.handlers.hover(c);
  };

  private onLeave = () => {
    if (!this.hovered) return;
    this.hovered = null;
    this.drawOverlay();
    this.handlers.hover(null);
  };

  private onClick = (e: MouseEvent) => {
    const c = this.cellAt(e);
    if (c) this.handlers.click(c);
  };

  private onZoom = () => {
    const v = this.zoom.value;
    this.fixedCellW = v === "fit" ? null : Number(v);
    if (!this.d) return;
    this.layout();
    this.draw();
    this.drawOverlay();
    this.placeBand();
    this.reportView();
  };

  private onKey = (e: KeyboardEvent) => {
    if (e.key === "ArrowUp" || e.key === "ArrowLeft") this.handlers.step(-1);
    else if (e.key === "ArrowDown" || e.key === "ArrowRight") this.handlers.step(1);
    else if (e.key === "Home") this.handlers.goto(0);
    else if (e.key === "End") this.handlers.goto(this.d ? this.d.R - 1 : 0);
    else if (e.key === "Escape") this.handlers.unpin();
    else if (e.key === "w") this.handlers.writers?.();
    else return;
    e.preventDefault();
  };

  /** The heatmap with its row labels, a title (wrapped to the image's width) and the colour bar with its
   *  ticks and notes, on a light background in every theme (dark-theme text would vanish on paper). */
  toPNG(title: string): Promise<Blob> {
    if (!this.d || !this.scale) return Promise.reject(new Error("nothing to export yet"));
    const d = this.d;
    const s = this.scale;
    const labelW = 64;
    const pad = 8;
    const font = cssVar(this.el, "--jp-ui-font-family", "sans-serif");
    const gridW = labelW + d.T * this.cellW + pad;
    const w = Math.max(gridW, 420);
    const measure = document.createElement("canvas").getContext("2d")!;
    measure.font = `bold 12px ${font}`;
    const titleLines = wrapText(measure, title, w - 2 * pad);
    const titleH = 8 + 16 * titleLines.length;
    measure.font = `11px ${font}`;
    const notes = [s.note, d.emergence && this.cellW >= 14 ? this.emergenceNote.textContent ?? "" : ""].filter(Boolean);
    const noteLines = notes.flatMap((n) => wrapText(measure, n, w - 2 * pad));
    const legendH = 18 + 12 + 16 + 14 * noteLines.length + 6;
    const gridH = d.R * this.rowH + AXIS_H + 6;
    const hgt = titleH + gridH + legendH;
    const sc = Math.max(0.25, Math.min(2, MAX_CANVAS / w, MAX_CANVAS / hgt, Math.sqrt(MAX_AREA / (w * hgt))));
    const c = document.createElement("canvas");
    c.width = Math.round(w * sc);
    c.height = Math.round(hgt * sc);
    const ctx = c.getContext("2d")!;
    ctx.scale(sc, sc);
    ctx.fillStyle = LIGHT.bg;
    ctx.fillRect(0, 0, w, hgt);
    ctx.fillStyle = LIGHT.fg;
    ctx.font = `bold 12px ${font}`;
    ctx.textBaseline = "middle";
    titleLines.forEach((line, i) => ctx.fillText(line, pad, 4 + 16 * i + 8));
    ctx.font = this.font(11);
    ctx.textAlign = "right";
    Array.from({ length: d.R }, (_, r) => rowLabel(d.meta, r)).forEach((lab, r) => ctx.fillText(lab, labelW - 6, titleH + r * this.rowH + this.rowH / 2));
    ctx.save();
    ctx.translate(labelW, titleH);
    this.paint(ctx, LIGHT);
    ctx.restore();
    this.paintLegend(ctx, s, pad, titleH + gridH, Math.min(w - 2 * pad, 360), noteLines, font);
    return new Promise((resolve, reject) =>
      c.toBlob((b) => (b ? resolve(b) : reject(new Error("canvas.toBlob failed"))), "image/png"),
    );
  }

  /** The colour bar (the scale's map, left to right), its title with unit, ticks and notes, at (x, y). */
  private paintLegend(ctx: CanvasRenderingContext2D, s: Scale, x: number, y: number, barW: number, notes: string[], font: string): void {
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillStyle = LIGHT.fg;
    ctx.font = `11px ${font}`;
    ctx.fillText(`${s.title} [${s.unit}]`, x, y + 7, barW * 2);
    const top = y + 16;
    for (let i = 0; i < barW; i++) {
      const c = sample(s.map, i / Math.max(1, barW - 1));
      ctx.fillStyle = c ? css(c) : LIGHT.bg;
      ctx.fillRect(x + i, top, 1.5, 12);
    }
    ctx.fillStyle = LIGHT.fg;
    ctx.font = `10px ${font}`;
    for (const t of s.ticks) {
      const tx = x + t.t * barW;
      ctx.fillRect(tx - 0.5, top + 12, 1, 3);
      ctx.textAlign = t.t < 0.05 ? "left" : t.t > 0.95 ? "right" : "center";
      ctx.fillText(t.label, tx, top + 21);
    }
    ctx.textAlign = "left";
    ctx.font = `11px ${font}`;
    notes.forEach((n, i) => ctx.fillText(n, x, top + 36 + 14 * i));
  }

  dispose(): void {
    this.overlay.removeEventListener("mousemove", this.onMove);
    this.overlay.removeEventListener("mouseleave", this.onLeave);
    this.overlay.removeEventListener("click", this.onClick);
    this.scroller.removeEventListener("keydown", this.onKey);
    this.scroller.removeEventListener("scroll", this.onScroll);
    this.zoom.removeEventListener("change", this.onZoom);
  }
}
