// The token strip: one chip per input token (whitespace made visible, BOS flagged); under each
// token, the current layer's top-1 next-token prediction, coloured by the heatmap's metric at that
// layer (the legend below the heatmap applies; a caption says so). Tokens that are only part of a
// multi-byte UTF-8 character (emoji, CJK split into byte tokens) show the character they belong to
// and which of its bytes they carry ("😀, bytes 1–2 of 4").
//
// Long prompts: the strip holds at most MAX_CHIPS chips, a window that follows the heatmap's
// horizontal scroll (the heatmap is the overview, the strip the close-up). A layer step rewrites
// only the predictions of chips scrolled into view; the others are marked stale and painted when
// the strip scrolls to them (a wrapping row of 256 chips costs several ms of style and layout).

import { isBos, rowName, tokenText, type LensData } from "./codecs";
import { css, sample, textOn } from "./colors";
import { h } from "./dom";
import { valueAt, type MetricName, type Scale, type ViewOpts } from "./metrics";
import { charRunText } from "./chars";
import { visible } from "./text";

export const MAX_CHIPS = 256;

export interface StripHandlers {
  hover(pos: number | null, anchor: HTMLElement | null): void;
  click(pos: number): void;
}

interface Colouring {
  metric: MetricName;
  opts: ViewOpts;
  scale: Scale;
  label: string;
}

export class TokenStrip {
  /** wrapper: caption + range note + the chip list (`.rw-strip`) */
  readonly el: HTMLDivElement;
  private readonly list: HTMLDivElement;
  private readonly note: HTMLDivElement;
  private readonly caption: HTMLDivElement;
  private chips: HTMLSpanElement[] = [];
  private preds: HTMLSpanElement[] = [];
  /** per chip: the "layer|colouring" its prediction was painted for */
  private painted: string[] = [];
  private d: LensData | null = null;
  private layer = 0;
  private start = 0; // first position with a chip
  private selectedPos: number | null = null;
  private hoverPos: number | null = null;
  private colouring: Colouring | null = null;
  private colourKey = "";
  private scrollQueued = false;
  private recheckQueued = false;

  constructor(private readonly handlers: StripHandlers) {
    this.list = h("div", {
      class: "rw-strip",
      role: "list",
      "aria-label": "tokens with the current layer's top-1 prediction",
    });
    this.caption = h("div", { class: "rw-strip-caption" });
    this.note = h("div", { class: "rw-strip-range", hidden: true });
    this.el = h("div", { class: "rw-strip-box" }, this.caption, this.note, this.list);
    this.list.addEventListener("mouseover", this.onOver);
    this.list.addEventListener("mouseleave", this.onLeave);
    this.list.addEventListener("click", this.onClick);
    this.list.addEventListener("scroll", this.onScroll, { passive: true });
  }

  setData(d: LensData, layer: number): void {
    this.d = d;
    this.layer = Math.max(0, Math.min(d.R - 1, layer));
    this.start = d.T <= MAX_CHIPS ? 0 : Math.max(0, Math.min(this.start, d.T - MAX_CHIPS));
    this.build();
  }

  /** Colour predictions by `metric` at the current layer, with the heatmap's scale. */
  setColouring(metric: MetricName, opts: ViewOpts, scale: Scale, label: string): void {
    this.colouring = { metric, opts: { ...opts }, scale, label };
    this.colourKey = `${metric}|${opts.tauIdx}|${opts.target}|${scale.title}|${scale.ticks.map((t) => t.label).join(",")}`;
    this.list.dataset.metric = metric;
    this.showCaption();
    this.paint(true);
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
    const chars = d.meta.chars ?? {};
    this.chips = [];
    this.preds = [];
    this.painted = [];
    const frag = document.createDocumentFragment();
    for (let p = this.start; p < end; p++) {
      const bos = isBos(d, p);
      const runs = chars[String(p)];
      const charText = charRunText(runs);
      const tok = h(
        "span",
        { class: "rw-chip-tok" },
        bos ? h("span", { class: "rw-bos-flag", text: "BOS" }) : null,
        visible(tokenText(d, d.tokenIds[p])),
        runs && runs.length ? h("span", { class: "rw-chip-char", text: runs.map((r) => r[0]).join("") }) : null,
      );
      const pred = h("span", { class: "rw-chip-pred" });
      // as wide as the longest prediction at any layer: scrubbing never re-wraps the strip, and a
      // prediction's new text re-lays out only its own box (fixed size, clipped)
      let longest = 1;
      for (let r = 0; r < d.R; r++) longest = Math.max(longest, Array.from(visible(tokenText(d, d.top1Id[r * d.T + p]))).length);
      pred.style.width = `calc(${longest}ch + 8px)`;
      const chip = h(
        "span",
        {
          class: bos ? "rw-chip rw-chip-bos" : "rw-chip",
          role: "listitem",
          "data-pos": p,
          title: charText ? `pos ${p}: ${charText}` : `pos ${p}`,
          "data-char": charText || undefined,
        },
        tok,
        pred,
      );
      this.chips.push(chip);
      this.preds.push(pred);
      this.painted.push("");
      frag.append(chip);
    }
    this.list.replaceChildren(frag);
    const windowed = end - this.start < d.T;
    this.note.hidden = !windowed;
    this.note.textContent = windowed
      ? `tokens ${this.start}–${end - 1} of ${d.T} (follows the heatmap's scroll position)`
      : "";
    this.list.dataset.start = String(this.start);
    this.showCaption();
    this.paint(true);
    this.setSelectedPos(this.selectedPos);
  }

  /** Another layer: repaint the predictions of the chips in view (the rest when scrolled to). */
  setLayer(layer: number): void {
    const d = this.d;
    if (!d) return;
    layer = Math.max(0, Math.min(d.R - 1, layer));
    if (layer === this.layer && this.list.dataset.layer === String(layer)) return;
    this.layer = layer;
    this.showCaption();
    this.paint(false);
  }

  private showCaption(): void {
    const d = this.d;
    if (!d) return;
    const lab = rowName(d.meta, this.layer);
    const by = this.colouring ? `coloured by ${this.colouring.label} (legend below the heatmap)` : "";
    this.caption.textContent = `input tokens; under each, the top-1 next-token prediction at ${lab}${by ? `, ${by}` : ""}`;
  }

  /** Paint predictions: all chips (`all`) or only those scrolled into view. */
  private paint(all: boolean): void {
    const d = this.d;
    if (!d) return;
    this.list.dataset.layer = String(this.layer);
    const key = `${this.layer}|${this.colourKey}`;
    let [lo, hi] = [0, this.preds.length - 1];
    if (!all) [lo, hi] = this.inView();
    let n = 0;
    for (let j = lo; j <= hi; j++) {
      if (this.painted[j] !== key) {
        this.paintChip(j, key);
        n++;
      }
    }
    this.list.dataset.painted = String(this.painted.filter((k) => k === key).length);
    // new prediction widths can re-wrap lines and bring a stale chip into view: check again on the
    // next frame (layout is clean then, and nothing is painted when everything in view is current)
    if (!all && n && !this.recheckQueued) {
      this.recheckQueued = true;
      requestAnimationFrame(() => {
        this.recheckQueued = false;
        this.paint(false);
      });
    }
  }

  private paintChip(j: number, key: string): void {
    const d = this.d!;
    const p = this.start + j;
    const i = this.layer * d.T + p;
    const c = this.colouring;
    const v = c ? valueAt(d, c.metric, this.layer, p, c.opts) : d.top1Prob[i];
    const rgb = (c ? sample(c.scale.map, c.scale.toT(v)) : null) ?? [128, 128, 128];
    const pred = this.preds[j];
    // write only what differs (neighbouring layers often agree): fewer style and layout updates
    const text = visible(tokenText(d, d.top1Id[i]));
    const bg = css(rgb);
    const fg = textOn(rgb);
    if (pred.textContent !== text) pred.textContent = text;
    if (pred.dataset.bg !== bg) {
      pred.style.backgroundColor = bg;
      pred.dataset.bg = bg;
    }
    if (pred.dataset.fg !== fg) {
      pred.style.color = fg;
      pred.dataset.fg = fg;
    }
    this.painted[j] = key;
  }

  /** Indices of the chips inside the strip's scroll viewport (reads layout: call before writes). */
  private inView(): [number, number] {
    const n = this.chips.length;
    if (!n) return [0, -1];
    const top = this.list.scrollTop;
    const bottom = top + (this.list.clientHeight || 0);
    if (bottom <= top) return [0, n - 1]; // not laid out (hidden): paint everything
    // chips are laid out in order: binary search the first chip whose bottom is below `top`
    const bottomOf = (j: number) => this.chips[j].offsetTop + this.chips[j].offsetHeight;
    let a = 0;
    let b = n - 1;
    while (a < b) {
      const m = (a + b) >> 1;
      if (bottomOf(m) <= top) a = m + 1;
      else b = m;
    }
    const lo = a;
    a = lo;
    b = n - 1;
    while (a < b) {
      const m = (a + b + 1) >> 1;
      if (this.chips[m].offsetTop < bottom) a = m;
      else b = m - 1;
    }
    return [lo, a];
  }

  private onScroll = () => {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      this.paint(false);
    });
  };

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
    this.list.removeEventListener("scroll", this.onScroll);
  }
}
