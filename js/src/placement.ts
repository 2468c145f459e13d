// Where a floating box (the hover tooltip) goes: the part of the page a person can see, and the side of
// an anchor (beside, below or above it) where the whole box fits. Pure geometry in client (viewport)
// coordinates, but for `visibleArea`, which reads the page's layout. No DOM is changed here.

/** A rectangle in client coordinates. */
export interface Box {
  left: number;
  top: number;
  right: number;
  bottom: number;
}

export type Side = "right" | "left" | "below" | "above";

/** A placement: the box's top-left corner (client coordinates), the side, and the height it may take
 *  (`room`: its full height when it fits, less when it does not). */
export interface Spot {
  x: number;
  y: number;
  side: Side;
  room: number;
}

export const SIDES: readonly Side[] = ["right", "left", "below", "above"];

export function intersect(a: Box, b: Box): Box {
  return { left: Math.max(a.left, b.left), top: Math.max(a.top, b.top), right: Math.min(a.right, b.right), bottom: Math.min(a.bottom, b.bottom) };
}

export function boxOf(r: DOMRect | Box): Box {
  return { left: r.left, top: r.top, right: r.right, bottom: r.bottom };
}

/** Scrolling ancestors count as a viewport when their content scrolls, or when they are a panel larger
 *  than the widget (the notebook's scroller); a scroll box that just hugs the widget (an output area)
 *  does not. Ancestors that merely clip (`overflow: hidden`, Lumino's widgets) do not count either: the
 *  box floats in the top layer, above them. */
const SCROLLS = new Set(["auto", "scroll"]);
const PANEL_MARGIN = 32;

/** The part of the window a person sees around `el`: the window's viewport cut by every scrolling
 *  ancestor of `el` (the notebook's scroller, a scrolled output area), each by its client box (inside its
 *  borders and scroll bars), per axis. */
export function visibleArea(el: Element): Box {
  const doc = el.ownerDocument;
  const win = doc.defaultView;
  const de = doc.documentElement;
  let b: Box = { left: 0, top: 0, right: de.clientWidth || win?.innerWidth || 0, bottom: de.clientHeight || win?.innerHeight || 0 };
  const own = el.getBoundingClientRect();
  for (let e = el.parentElement; e && e !== doc.body && e !== de; e = e.parentElement) {
    const s = getComputedStyle(e);
    const r = e.getBoundingClientRect();
    const left = r.left + e.clientLeft;
    const top = r.top + e.clientTop;
    if (SCROLLS.has(s.overflowY) && (e.scrollHeight > e.clientHeight + 1 || e.clientHeight > own.height + PANEL_MARGIN)) {
      b = intersect(b, { left: b.left, right: b.right, top, bottom: top + e.clientHeight });
    }
    if (SCROLLS.has(s.overflowX) && (e.scrollWidth > e.clientWidth + 1 || e.clientWidth > own.width + PANEL_MARGIN)) {
      b = intersect(b, { top: b.top, bottom: b.bottom, left, right: left + e.clientWidth });
    }
  }
  return b;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.max(lo, Math.min(v, Math.max(lo, hi)));
}

/** The box (w × h) on `side` of anchor `a`, `gap` away from it, slid along the side to stay in
 *  `region`; `room` is the height the region leaves it there. */
export function spotAt(side: Side, a: Box, w: number, h: number, region: Box, gap: number): Spot & { fitsAcross: boolean } {
  const height = region.bottom - region.top;
  const width = region.right - region.left;
  if (side === "right" || side === "left") {
    const x = side === "right" ? a.right + gap : a.left - gap - w;
    const fitsAcross = side === "right" ? x + w <= region.right : x >= region.left;
    return { x, y: clamp(a.top, region.top, region.bottom - h), side, room: height, fitsAcross };
  }
  const x = clamp(a.left, region.left, region.right - w);
  if (side === "below") {
    const y = a.bottom + gap;
    return { x, y, side, room: region.bottom - y, fitsAcross: w <= width };
  }
  const room = a.top - gap - region.top;
  return { x, y: a.top - gap - Math.min(h, room), side, room, fitsAcross: w <= width };
}

/** The first side (right, left, below, above) where the whole box fits in `region`, or null. */
export function fitSpot(a: Box, w: number, h: number, region: Box, gap = 8): Spot | null {
  for (const side of SIDES) {
    const s = spotAt(side, a, w, h, region, gap);
    if (s.fitsAcross && h <= s.room) return s;
  }
  return null;
}

/** Nothing fits: the side that leaves the box the most height (its width fitting across), its height
 *  to be capped to `room`. */
export function roomiestSpot(a: Box, w: number, h: number, region: Box, gap = 8): Spot {
  let best: Spot | null = null;
  for (const side of SIDES) {
    const s = spotAt(side, a, w, h, region, gap);
    if (s.fitsAcross && (!best || s.room > best.room)) best = s;
  }
  if (best) return best;
  // not even the width fits (a window narrower than the box): from the region's top-left corner
  return { x: region.left, y: region.top, side: "below", room: region.bottom - region.top };
}
