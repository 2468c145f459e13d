// Cell details (hover tooltip and the pinned-cell panel share the same content builder).

import { isBos, rowName, tokenText, type LensData } from "./codecs";
import { h } from "./dom";
import { METRICS, arrayAt, available, coversRow, fmt, valueAt, type MetricSpec, type ViewOpts } from "./metrics";
import { lensLabel } from "./protocol";
import { tauChoice } from "./tau";
import { charRunText } from "./chars";
import { visible } from "./text";

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

/** A floating box positioned inside the widget root (absolute, so it works in any output area).
 *
 * It stays inside the root's box below `keepOut()` (the bottom of the editor and toolbar, which it
 * never covers), beside the anchor: right of it, or left near the right edge; top-aligned with it,
 * or flipped so its bottom meets the anchor's bottom near the lower edge. When the region is too
 * small for the content, the box is capped to the region (never extends the output area). */
export class Tooltip {
  readonly el: HTMLDivElement;
  constructor(
    private readonly root: HTMLElement,
    private readonly keepOut: () => number = () => -Infinity,
  ) {
    this.el = h("div", { class: "rw-tooltip", role: "tooltip", hidden: true });
  }

  show(content: Node, anchor: DOMRect): void {
    this.el.replaceChildren(content);
    this.el.hidden = false;
    // absolute positions are relative to the root's padding box (inside its border)
    const box = this.root.getBoundingClientRect();
    const ox = box.left + this.root.clientLeft;
    const oy = box.top + this.root.clientTop;
    const rr = { width: this.root.clientWidth, height: this.root.clientHeight };
    const gap = 8;
    const top = Math.max(0, Math.min(rr.height, this.keepOut() - oy + 2));
    const bottom = rr.height;
    this.el.style.maxWidth = `${Math.max(120, rr.width)}px`;
    this.el.style.maxHeight = `${Math.max(40, bottom - top)}px`;
    // measure at the origin: an absolute box shrinks to the room right of its current position
    this.el.style.left = "0px";
    this.el.style.top = "0px";
    const tw = this.el.offsetWidth;
    const th = this.el.offsetHeight;
    const a = { left: anchor.left - ox, right: anchor.right - ox, top: anchor.top - oy, bottom: anchor.bottom - oy };

    let x = a.right + gap; // right of the anchor
    let side = x + tw <= rr.width;
    if (!side && a.left - gap - tw >= 0) {
      x = a.left - gap - tw; // flip left
      side = true;
    }
    let y: number;
    if (side) {
      y = a.top; // beside: top-aligned, flipped up near the bottom edge
      if (y + th > bottom) y = a.bottom - th;
    } else {
      // no room on either side: below the anchor, or above it near the bottom edge
      x = Math.min(Math.max(0, a.left), Math.max(0, rr.width - tw));
      y = a.bottom + gap;
      if (y + th > bottom) y = a.top - gap - th;
    }
    x = Math.max(0, Math.min(x, Math.max(0, rr.width - tw)));
    y = Math.max(top, Math.min(y, Math.max(top, bottom - th)));
    this.el.style.left = `${x}px`;
    this.el.style.top = `${y}px`;
  }

  /** Replace the content in place (e.g. when top-k details arrive) keeping the position. */
  update(content: Node): void {
    if (!this.el.hidden) this.el.replaceChildren(content);
  }

  hide(): void {
    this.el.hidden = true;
    this.el.replaceChildren();
  }

  get visible(): boolean {
    return !this.el.hidden;
  }
}
