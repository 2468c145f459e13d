// The token strip: one chip per input token (whitespace made visible, BOS flagged); under each
// token, the current layer's top-1 next-token prediction, coloured by its probability.
//
// Long prompts: the strip holds at most MAX_CHIPS chips, a window that follows the heatmap's
// horizontal scroll (the heatmap is the overview, the strip the close-up). Every layer step
// rewrites each chip's prediction, and a wrapping row of 1,000+ chips costs ~100 ms of
// layout+paint per step; 256 chips keep scrubbing smooth.

import { tokenText, type LensData } from "./codecs";
import { VIRIDIS, css, sample, textOn } from "./colors";
import { h } from "./dom";
import { visible } from "./text";

export const MAX_CHIPS = 256;

export interface StripHandlers {
  hover(pos: number | null, anchor: HTMLElement | null): void;
  click(pos: number): void;
}

export class TokenStrip {
  /** wrapper: range note + the chip list (`.rw-strip`) */
  readonly el: HTMLDivElement;
  private readonly list: HTMLDivElement;
  private readonly note: HTMLDivElement;
  private chips: HTMLSpanElement[] = [];
  private preds: HTMLSpanElement[] = [];
  private d: LensData | null = null;
  private layer = 0;
  private start = 0; // first position with a chip
  private selectedPos: number | null = null;
  private hoverPos: number | null = null;

  constructor(private readonly handlers: StripHandlers) {
    this.list = h("div", {
      class: "rw-strip",
      role: "list",
      "aria-label": "tokens with the current layer's top-1 prediction",
    });
    this.note = h("div", { class: "rw-strip-range", hidden: true });
    this.el = h("div", { class: "rw-strip-box" }, this.note, this.list);
    this.list.addEventListener("mouseover", this.onOver);
    this.list.addEventListener("mouseleave", this.onLeave);
    this.list.addEventListener("click", this.onClick);
  }

  setData(d: LensData, layer: number): void {
    this.d = d;
    this.layer = Math.max(0, Math.min(d.R - 1, layer));
    this.start = d.T <= MAX_CHIPS ? 0 : Math.max(0, Math.min(this.start, d.T - MAX_CHIPS));
    this.build();
  }

  /** The heatmap shows columns first..last: make sure the strip covers them (long prompts). */
  setWindow(first: number, last: number): void {
    const d = this.d;
    if (!d || d.T <= MAX_CHIPS) return;
    const end = this.start + MAX_CHIPS;
    if (first >= this.start && last < end) return;
    const span = Math.max(0, last - first);
    const start = Math.max(0, Math.min(d.T - MAX_CHIPS, first - Math.floor((MAX_CHIPS - span) / 2)));
    if (start === this.start) return;
    this.start = start;
    this.build();
  }

  private build(): void {
    const d = this.d!;
    const end = Math.min(d.T, this.start + MAX_CHIPS);
    this.chips = [];
    this.preds = [];
    const frag = document.createDocumentFragment();
    for (let p = this.start; p < end; p++) {
      const bos = d.meta.has_bos && p === 0;
      const tok = h(
        "span",
        { class: "rw-chip-tok" },
        bos ? h("span", { class: "rw-bos-flag", text: "BOS" }) : null,
        visible(tokenText(d, d.tokenIds[p])),
      );
      const pred = h("span", { class: "rw-chip-pred" });
      const chip = h(
        "span",
        { class: bos ? "rw-chip rw-chip-bos" : "rw-chip", role: "listitem", "data-pos": p, title: `pos ${p}` },
        tok,
        pred,
      );
      this.chips.push(chip);
      this.preds.push(pred);
      frag.append(chip);
    }
    this.list.replaceChildren(frag);
    const windowed = end - this.start < d.T;
    this.note.hidden = !windowed;
    this.note.textContent = windowed
      ? `tokens ${this.start}–${end - 1} of ${d.T} (follows the heatmap's scroll position)`
      : "";
    this.list.dataset.start = String(this.start);
    this.paintAll();
    this.setSelectedPos(this.selectedPos);
  }

  /** Recolour for another layer (text + colour of at most MAX_CHIPS small spans). */
  setLayer(layer: number): void {
    const d = this.d;
    if (!d) return;
    layer = Math.max(0, Math.min(d.R - 1, layer));
    if (layer === this.layer && this.list.dataset.layer === String(layer)) return;
    this.layer = layer;
    this.paintAll();
  }

  private paintAll(): void {
    const d = this.d!;
    this.list.dataset.layer = String(this.layer);
    const base = this.layer * d.T + this.start;
    for (let j = 0; j < this.preds.length; j++) {
      const i = base + j;
      const c = sample(VIRIDIS, d.top1Prob[i]) ?? [128, 128, 128];
      const pred = this.preds[j];
      pred.textContent = visible(tokenText(d, d.top1Id[i]));
      pred.style.backgroundColor = css(c);
      pred.style.color = textOn(c);
    }
  }

  setSelectedPos(pos: number | null): void {
    if (this.selectedPos !== null) this.chips[this.selectedPos - this.start]?.classList.remove("rw-chip-selected");
    this.selectedPos = pos;
    if (pos !== null) this.chips[pos - this.start]?.classList.add("rw-chip-selected");
  }

  private chipOf(e: Event): HTMLElement | null {
    const t = e.target as Element | null;
    const chip = t?.closest?.(".rw-chip") as HTMLElement | null;
    return chip && this.list.contains(chip) ? chip : null;
  }

  private onOver = (e: MouseEvent) => {
    const chip = this.chipOf(e);
    const pos = chip ? Number(chip.dataset.pos) : null;
    if (pos === this.hoverPos) return;
    this.hoverPos = pos;
    this.handlers.hover(pos, chip);
  };

  private onLeave = () => {
    if (this.hoverPos === null) return;
    this.hoverPos = null;
    this.handlers.hover(null, null);
  };

  private onClick = (e: MouseEvent) => {
    const chip = this.chipOf(e);
    if (chip) this.handlers.click(Number(chip.dataset.pos));
  };

  dispose(): void {
    this.list.removeEventListener("mouseover", this.onOver);
    this.list.removeEventListener("mouseleave", this.onLeave);
    this.list.removeEventListener("click", this.onClick);
  }
}
