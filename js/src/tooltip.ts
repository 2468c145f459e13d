// Cell details (hover tooltip and the pinned-cell panel share the same content builder).

import { isBos, rowName, tokenText, type LensData } from "./codecs";
import { h } from "./dom";
import { METRICS, arrayAt, available, coversRow, fmt, valueAt, type MetricSpec, type ViewOpts } from "./metrics";
import { lensLabel } from "./protocol";
import { tauChoice } from "./tau";
import { charRunText } from "./chars";
import { visible } from "./text";
import "./tooltip.css";
import { boxOf, fitSpot, intersect, roomiestSpot, visibleArea, type Box, type Spot } from "./placement";

/** The full top-k list for one cell, from a details reply or from local arrays (static export). */
export type TopK =
  | { state: "loading" }
  | { state: "error"; message: string }
  | { state: "ok"; ids: number[]; probs: number[]; strings: Map<number, string> };

function tok(text: string, cls = "rw-tok"): HTMLSpanElement {
  return h("span", { class: cls, text: visible(text) });
}

function kv(tbody: HTMLTableSectionElement, key: string, ...value: (Node | string)[]): void {
  tbody.append(h("tr", {}, h("th", { scope: "row", text: key }), h("td", {}, ...value)));
}

/** One tooltip line of a metric: its registry `tooltip` template, placeholders filled in. Tokens
 *  ({top1} {final_top1} {target} {answer} {counterfactual}) become token chips, {v} the value, the
 *  name of a payload array (e.g. {target_prob}) that array's value at the cell, {tau} {k} {lens_label}
 *  text. Every string goes in as text. */
function metricLine(d: LensData, s: MetricSpec, row: number, pos: number, o: ViewOpts): (Node | string)[] {
  const i = row * d.T + pos;
  const m = d.meta;
  const { tau, k } = tauChoice(m, o.tauIdx);
  const digits = s.digits ?? 3;
  const tokens: Record<string, () => Node> = {
    top1: () => tok(tokenText(d, d.top1Id[i]), "rw-tok rw-tip-top1"),
    final_top1: () => tok(tokenText(d, d.top1Id[(d.R - 1) * d.T + pos])),
    target: () => tok(m.targets[Math.min(o.target, d.nTargets - 1)] ?? ""),
    answer: () => tok(m.logit_diff?.answer ?? ""),
    counterfactual: () => tok(m.logit_diff?.counterfactual ?? ""),
  };
  const words: Record<string, () => string> = {
    v: () => fmt(valueAt(d, s.name, row, pos, o), digits),
    tau: () => fmt(tau, 3),
    k: () => String(k),
    lens_label: () => lensLabel(m.lens),
  };
  return s.tooltip.split(/(\{\w+\})/).filter((x) => x !== "").map((part) => {
    const key = /^\{(\w+)\}$/.exec(part)?.[1];
    if (!key) return part;
    if (tokens[key]) return tokens[key]();
    if (words[key]) return words[key]();
    if (d.arrays.has(key)) return fmt(arrayAt(d, s, key, row, pos, o.target), digits);
    return part;
  });
}

/** Build the content for cell (row, pos). Pure DOM building; every string goes in as text. */
export function cellInfo(d: LensData, row: number, pos: number, o: ViewOpts, topk: TopK): HTMLDivElement {
  const m = d.meta;
  const inTok = tokenText(d, d.tokenIds[pos]);

  const head = h(
    "div",
    { class: "rw-tip-head" },
    h("span", { class: "rw-tip-pos", text: `pos ${pos}` }),
    tok(inTok, "rw-tok rw-tip-input"),
    isBos(d, pos) ? h("span", { class: "rw-bos-flag", text: "BOS" }) : null,
  );
  const chars = charRunText(m.chars?.[String(pos)]);
  const sub = h("div", { class: "rw-tip-layer", text: `${rowName(m, row)} · ${m.hook_names[row] ?? ""}` });

  // one line per metric of the registry that this cell has (per-target metrics: one per target)
  const body = h("tbody");
  for (const s of METRICS) {
    if (!available(d, s.name) || !coversRow(s, d, row)) continue;
    const targets = s.per_target ? Array.from({ length: d.nTargets }, (_, t) => t) : [o.target];
    for (const t of targets) kv(body, s.tooltip_label, ...metricLine(d, s, row, pos, { ...o, target: t }));
  }
  if (d.emergence) {
    const e = d.emergence[pos];
    kv(body, "emerges", e < 0 ? "not yet read" : `from ${rowName(m, e)} on (stays in the top-${m.top_k})`);
  }

  const list = h("div", { class: "rw-topk" });
  if (topk.state === "loading") list.append(h("div", { class: "rw-topk-status", text: "loading top-k…" }));
  else if (topk.state === "error") list.append(h("div", { class: "rw-topk-status rw-topk-error", text: `top-k unavailable: ${topk.message}` }));
  else {
    const ol = h("ol", { class: "rw-topk-list" });
    topk.ids.forEach((id, r) => {
      const p = topk.probs[r] ?? NaN;
      const text = topk.strings.get(id) ?? d.strings.get(id) ?? `⟨${id}⟩`;
      const bar = h("span", { class: "rw-topk-bar" });
      bar.style.width = `${Math.max(0, Math.min(1, p)) * 100}%`;
      ol.append(
        h(
          "li",
          { class: "rw-topk-item" },
          tok(text, "rw-tok rw-topk-tok"),
          h("span", { class: "rw-topk-barwrap" }, bar),
          h("span", { class: "rw-topk-prob", text: fmt(p, 3) }),
        ),
      );
    });
    list.append(h("div", { class: "rw-topk-title", text: `top-${topk.ids.length}` }), ol);
  }

  return h(
    "div",
    { class: "rw-cell-info" },
    head,
    chars ? h("div", { class: "rw-tip-char", text: `part of ${chars}` }) : null,
    sub,
    h("table", { class: "rw-tip-kv" }, body),
    list,
  );
}

/** The tooltip's layouts, tried in turn until one fits: as styled (one column in a narrow output, values
 *  beside the top-k list in a wide one); the values and the top-k list side by side; each of those with
 *  the secondary lines left to the pinned panel (compact: a note says so). */
const LAYOUTS: readonly string[][] = [[], ["rw-tip-cols"], ["rw-tip-compact"], ["rw-tip-cols", "rw-tip-compact"]];
/** (layout, region) in the order tried: each layout inside the widget's box, then in the visible area (a
 *  narrow one-column box below the widget hides less of the heatmap than a two-column one over it). */
const TRIES: readonly [number, number][] = [[0, 0], [0, 1], [1, 0], [1, 1], [2, 0], [2, 1], [3, 0], [3, 1]];
const GAP = 8;

/** A floating box beside a cell, readable whole wherever the widget is.
 *
 * It floats in the page's top layer (a manual popover: no output area, cell or scroller clips it) and
 * stays inside the visible area (the window's viewport cut by the notebook's scroller, `visibleArea`)
 * below `keepOut()` (the bottom of the editor and toolbar, which it never covers). Preferred: inside the
 * widget's own box; else anywhere in the visible area (`TRIES`: which layout where). Sides in turn: right
 * of the anchor, left, below, above (`fitSpot`); when nothing fits, the side with the most height,
 * the compact layout with its top-k list cut to the items that fit there (`trim`) and a note to pin the
 * cell (the pinned panel has everything). It follows its cell when the page scrolls. Without
 * popovers (old browsers) it is placed the same way inside the widget's box. */
export class Tooltip {
  readonly el: HTMLDivElement;
  private offset: { dx: number; dy: number; w: number; h: number } | null = null;
  private readonly follow = () => {
    if (!this.root.isConnected) this.hide(); // the view went away while shown
    else if (this.visible) this.place();
  };

  constructor(
    private readonly root: HTMLElement,
    private readonly keepOut: () => number = () => -Infinity,
  ) {
    const popover = typeof HTMLElement.prototype.showPopover === "function" ? "manual" : undefined;
    this.el = h("div", { class: "rw-tooltip", role: "tooltip", hidden: true, popover });
  }

  show(content: Node, anchor: DOMRect): void {
    this.el.replaceChildren(content);
    this.el.hidden = false;
    this.raise();
    const r = this.root.getBoundingClientRect();
    this.offset = { dx: anchor.left - r.left, dy: anchor.top - r.top, w: anchor.width, h: anchor.height };
    this.place();
    this.listen(true);
  }

  /** Into the top layer (once shown; it must be in the document); refused: placed inside the widget. */
  private raise(): void {
    if (!this.el.hasAttribute("popover") || !this.el.isConnected || this.floating) return;
    try {
      this.el.showPopover();
    } catch {
      this.el.removeAttribute("popover");
    }
  }

  /** In the top layer now (`:popover-open` is only asked where popovers exist). */
  private get floating(): boolean {
    return this.el.hasAttribute("popover") && this.el.matches(":popover-open");
  }

  /** The anchor where it is now: it moves with the widget when the page scrolls. */
  private anchorBox(): Box {
    const r = this.root.getBoundingClientRect();
    const o = this.offset ?? { dx: 0, dy: 0, w: 0, h: 0 };
    return { left: r.left + o.dx, top: r.top + o.dy, right: r.left + o.dx + o.w, bottom: r.top + o.dy + o.h };
  }

  private place(): void {
    const a = this.anchorBox();
    const view = visibleArea(this.root);
    const free = { ...view, top: Math.max(view.top, this.keepOut() + 2) };
    const inRoot = intersect(free, boxOf(this.root.getBoundingClientRect()));
    const regions = this.floating ? [inRoot, free] : [inRoot];
    const widest = regions[regions.length - 1];
    this.el.classList.remove("rw-tip-capped", "rw-tip-tight");
    for (const it of this.el.querySelectorAll<HTMLElement>(".rw-topk-item[hidden]")) it.hidden = false;
    this.el.querySelector<HTMLElement>(".rw-topk")?.removeAttribute("data-more");
    let size = { w: 0, h: 0, ox: 0, oy: 0 };
    const sizes = new Map<number, typeof size>();
    for (const [layout, tier] of TRIES) {
      if (tier >= regions.length) continue;
      this.el.classList.remove(...LAYOUTS.flat());
      this.el.classList.add(...LAYOUTS[layout]);
      size = sizes.get(layout) ?? this.measure(widest);
      sizes.set(layout, size);
      const s = fitSpot(a, size.w, size.h, regions[tier], GAP);
      if (s) return this.moveTo(s, size, null);
    }
    // nothing fits whole: the side with the most height, the top-k list cut to what fits there. Cutting
    // changes the box's size, so the side is chosen again until it stays; the height is capped to the room
    // of the side the box goes to (never another side's)
    this.el.classList.add("rw-tip-capped");
    let spot = roomiestSpot(a, size.w, size.h, widest, GAP);
    for (let i = 0; i < 3; i++) {
      this.trim(Math.max(40, spot.room));
      size = this.measure(widest);
      const s = fitSpot(a, size.w, size.h, widest, GAP);
      if (s) return this.moveTo(s, size, null);
      const next = roomiestSpot(a, size.w, size.h, widest, GAP);
      const settled = next.side === spot.side;
      spot = next;
      if (settled) break;
    }
    this.moveTo(spot, size, Math.max(40, spot.room));
  }

  /** Hide the top-k list's last items until the box is at most `room` high (one item stays); the list's
   *  note says how many more there are (the pinned panel has them). Still too high: the tight layout (the
   *  run note and the steering title hidden, the steering lines on one line), then the last item too when
   *  the steering lines are there to end the box. */
  private trim(room: number): void {
    const items = [...this.el.querySelectorAll<HTMLElement>(".rw-topk-item")];
    const list = this.el.querySelector<HTMLElement>(".rw-topk");
    let n = items.length;
    const cut = (keep: number) => {
      while (n > keep && this.el.offsetHeight > room) {
        items[--n].hidden = true;
        if (list) list.dataset.more = String(items.length - n);
      }
    };
    cut(1);
    if (this.el.offsetHeight <= room) return;
    this.el.classList.add("rw-tip-tight");
    if (this.el.offsetHeight > room && this.el.querySelector(".rw-steer-tip")) cut(0);
  }

  /** Its size (as laid out, at most the region's width) and where its position's origin is on the page
   *  (the viewport in the top layer, the widget's box without it). */
  private measure(region: Box): { w: number; h: number; ox: number; oy: number } {
    const st = this.el.style;
    st.maxHeight = "";
    st.width = ""; // its own width again (moveTo fixed the last one)
    st.setProperty("--rw-tip-room", `${Math.max(120, region.right - region.left)}px`);
    st.left = "0px"; // at the origin: an absolute box shrinks to the room right of its position
    st.top = "0px";
    const b = this.el.getBoundingClientRect();
    return { w: b.width, h: b.height, ox: b.left, oy: b.top };
  }

  private moveTo(s: Spot, o: { w: number; ox: number; oy: number }, cap: number | null): void {
    // the width measured at the origin, kept: away from it an absolute box may shrink to the room right of
    // its position, wrap, and grow taller than the height that was found to fit
    this.el.style.width = `${o.w}px`;
    this.el.style.left = `${s.x - o.ox}px`;
    this.el.style.top = `${s.y - o.oy}px`;
    this.el.style.maxHeight = cap === null ? "" : `${cap}px`;
    this.el.dataset.side = s.side;
  }

  private listen(on: boolean): void {
    const win = this.root.ownerDocument.defaultView;
    const opts = { capture: true, passive: true } as const;
    for (const evt of ["scroll", "resize"]) {
      if (on) win?.addEventListener(evt, this.follow, opts);
      else win?.removeEventListener(evt, this.follow, opts);
    }
  }

  /** Replace the content in place (e.g. when top-k details arrive), placed again for its new size. */
  update(content: Node): void {
    if (this.el.hidden) return;
    this.el.replaceChildren(content);
    this.place();
  }

  hide(): void {
    this.listen(false);
    this.offset = null;
    if (this.floating) this.el.hidePopover();
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  get visible(): boolean {
    return !this.el.hidden;
  }
}
