// One view of a ResidWidget: the DOM (header, editor, toolbar, strip, heatmap, legend, tooltip,
// pinned panel) and what local interactions do to it. Knows nothing about comms: widget.ts feeds it
// decoded payloads (`applyPayload`) and model changes; its own changes go through ViewState.

import type { LensData } from "./codecs";
import type { DetailsRun } from "./contract.gen";
import { Editor, Toolbar, type EditValues } from "./controls";
import { h } from "./dom";
import { Header } from "./header";
import { Heatmap, type Cell } from "./heatmap";
import { Legend } from "./legend";
import { METRICS, available, isMetric, metricSpec, scaleFor, type MetricName } from "./metrics";
import { TRAITS } from "./protocol";
import { TokenStrip } from "./tokens";
import { Tooltip, cellInfo } from "./tooltip";
import { HOVER_DWELL_MS, TopKSource } from "./topk";
import { SteerPanel, type SteerSpec } from "./steer";
import { compareLines, diffData, diffScale } from "./steerdata";
import type { Scale } from "./metrics";
import type { ViewState } from "./viewstate";
import type { WritersClient } from "./writers";
import { WritersPanel } from "./writerspanel";

export interface ViewHooks {
  /** a keystroke in the prompt / targets / top-k fields */
  editInput(): void;
  /** a choice to send at once (the lens menu) */
  editCommit(): void;
  /** the view failed locally (decode, PNG): show this in the error banner */
  localError(msg: string): void;
  /** the steering panel's spec, to send as an edit (debounced by the panel) */
  steerSend(spec: SteerSpec): void;
}

export class LensView {
  readonly root: HTMLDivElement;
  readonly header = new Header();
  readonly editor: Editor;
  readonly toolbar: Toolbar;
  readonly strip: TokenStrip;
  readonly heatmap: Heatmap;
  readonly legend = new Legend();
  readonly tooltip: Tooltip;
  readonly writers: WritersPanel;
  readonly steer: SteerPanel;
  /** the steered run paired with `data` (the steering panel's after payload), or null */
  after: LensData | null = null;
  /** `after` is a stage of the after run being streamed (not its final payload) */
  afterStreaming = false;
  /** a new after run is being computed (steering on and the kernel busy): [progress or null] */
  private afterBusy: [number | null] | null = null;
  private readonly pinned = h("div", { class: "rw-pinned", hidden: true, "aria-live": "polite" });
  private readonly empty = h("div", { class: "rw-empty", text: "No lens computed yet." });
  private readonly body: HTMLDivElement;
  data: LensData | null = null;
  /** the heatmap's positions in view [first, last) (null until it has scrolled or laid out) */
  visible: [number, number] | null = null;
  /** hovered cell or chip; row null = follows the layer (chips) */
  private tip: { row: number | null; pos: number; anchor: () => DOMRect } | null = null;

  constructor(
    private readonly state: ViewState,
    private readonly topk: TopKSource,
    private readonly hooks: ViewHooks,
    writers: WritersClient,
  ) {
    this.writers = new WritersPanel(writers);
    this.root = h("div", { class: "rw-root" });
    // JupyterLab (Lumino) handles keydown on the document, bubbling, and in command mode takes plain
    // keys on a focused non-text element (our sliders, selects, heatmap) as notebook shortcuts: arrows
    // would move between cells instead of layers. Unmodified keys stay inside the widget; modified
    // ones (Shift+Enter, Ctrl+S...) still reach JupyterLab.
    this.root.addEventListener("keydown", (e: KeyboardEvent) => {
      if (!(e.ctrlKey || e.metaKey || e.altKey || e.shiftKey)) e.stopPropagation();
    });
    guardKeysFromLumino();
    this.editor = new Editor(() => hooks.editInput(), () => hooks.editCommit());
    this.toolbar = new Toolbar({
      layer: (l) => this.setLayer(l, true),
      tau: (i) => this.setTau(i),
      metric: (m) => this.setMetric(m, true),
      target: (t) => {
        state.opts.target = t;
        this.redraw();
      },
      png: () => void this.downloadPNG(),
    });
    this.strip = new TokenStrip({
      hover: (pos, chip) => (pos === null || !chip ? this.hideTip() : this.showTip(null, pos, () => chip.getBoundingClientRect())),
      click: (pos) => this.toggleSelected({ row: state.layer, pos }),
    });
    this.heatmap = new Heatmap({
      hover: (c) => (c ? this.showTip(c.row, c.pos, () => this.heatmap.cellRect(c)) : this.hideTip()),
      click: (c) => this.toggleSelected(c),
      step: (s) => this.setLayer(state.layer + s, true),
      goto: (r) => this.setLayer(r, true),
      unpin: () => this.setSelected(null, true),
      writers: () => this.writersKey(),
      view: (first, last) => {
        this.visible = [first, last + 1];
        this.strip.setWindow(first, last);
      },
    });
    this.steer = new SteerPanel({
      send: (spec) => hooks.steerSend(spec),
      mode: () => {
        this.showAfterPending();
        this.redraw(true);
        this.refreshPinned();
      },
      pinned: () => this.state.selected?.pos ?? null,
      lens: () => this.data?.meta.lens ?? "logit",
    });
    this.toolbar.el.append(this.steer.toggle);
    // the tooltip never covers the editor and the toolbar
    this.tooltip = new Tooltip(this.root, () => this.toolbar.el.getBoundingClientRect().bottom);
    this.body = h("div", { class: "rw-body", hidden: true }, this.toolbar.el, this.steer.el, this.strip.el, this.steer.switcher, this.heatmap.el, this.legend.el, this.pinned, this.writers.el);
    this.root.append(this.header.el, this.header.errorBox, this.editor.el, this.empty, this.body, this.tooltip.el);
  }

  // ------------------------------------------------------------------ data
  /** Show a decoded payload (a complete one today; a streaming step may call it with partial data
   *  merged into the last one). `modelLayer`: the layer Python holds (the local one wins mid-scrub). */
  applyPayload(d: LensData, modelLayer: number): void {
    const st = this.state;
    this.data = d;
    if (this.after && this.after.meta.seq !== d.meta.seq) this.setAfter(null, false); // it belonged to the payload before
    if (!st.tauPending()) st.opts.tauIdx = null;
    st.opts.target = Math.min(st.opts.target, Math.max(0, d.nTargets - 1));
    this.header.setData(d);
    this.editor.suggest(suggestedTargets(d));
    this.empty.hidden = true;
    this.body.hidden = false;
    this.toolbar.setData(d);
    this.steer.setRefused(d.meta.refused?.interventions ?? "");
    this.toolbar.showTau(d, st.opts.tauIdx);
    st.layer = Math.max(0, Math.min(d.R - 1, st.layerPending() ? st.layer : modelLayer));
    this.strip.setData(d, st.layer);
    this.heatmap.setLayer(st.layer);
    this.toolbar.showLayer(d, st.layer);
    this.redraw();
    this.setSelected(st.selected, false);
    this.refreshTip();
  }

  /** No payload yet (or `{}`): the "no lens" note instead of an empty body. */
  showEmpty(): void {
    if (this.data) return;
    this.empty.hidden = false;
    this.body.hidden = true;
  }

  /** The metric drawn: the chosen one (the `metric` trait) while this payload has it, else the
   *  trait's default (a probability). The choice is kept, so clearing the targets and adding them
   *  again brings a target metric back. */
  shownMetric(): MetricName {
    const d = this.data;
    const m = this.state.metric;
    if (!d || available(d, m)) return m;
    return available(d, TRAITS.metric.default) ? TRAITS.metric.default : METRICS[0].name;
  }

  /** The steered run paired with the shown payload (null: none); the before | after | difference switch shows with it. */
  setAfter(a: LensData | null, draw = true, streaming = false): void {
    this.after = a;
    this.afterStreaming = !!a && streaming;
    this.steer.showSwitch(!!a || !!this.afterBusy);
    this.showAfterPending();
    if (draw) {
      this.redraw(true);
      this.refreshPinned();
    }
  }

  /** A new after run is being computed (`busy`; `progress` 0..1 once it runs, else null): the switch says so and the
   *  last after view shown meanwhile is marked stale (dimmed), or the plain run is shown meanwhile when there is none. */
  setAfterPending(busy: boolean, progress: number | null): void {
    this.afterBusy = busy ? [progress] : null;
    this.steer.showSwitch(!!this.after || busy);
    this.showAfterPending();
  }

  private showAfterPending(): void {
    const busy = this.afterBusy;
    const mode = this.steer.mode;
    const shows = mode === "before" ? "before" : !this.after ? "none" : this.afterStreaming ? "streaming" : "stale";
    this.steer.showPending(!!busy, busy ? busy[0] : null, shows);
    this.root.classList.toggle("rw-after-stale", !!busy && shows === "stale");
  }

  /** What the heatmap shows: the plain run, the steered one (on the plain run's scale, so rows the steering
   *  cannot reach keep their colours), or after − before on a diverging scale. */
  private frame(m: MetricName, base: Scale): { d: LensData; s: Scale } {
    const d = this.data!;
    const a = this.after;
    const mode = a ? this.steer.mode : "before";
    this.root.dataset.steer = a ? mode : "none";
    if (!a || mode === "before") return { d, s: base };
    if (mode === "after") return { d: a, s: base };
    const diff = diffData(d, a, m);
    return { d: diff, s: diffScale(diff, m, this.state.opts, base) };
  }

  private redraw(tip = false): void {
    const d = this.data;
    if (!d) return;
    const st = this.state;
    const m = this.shownMetric();
    const s = scaleFor(d, m, st.opts);
    const shown = this.frame(m, s);
    this.heatmap.setData(shown.d, m, st.opts, shown.s);
    this.legend.set(m, shown.s);
    if (tip) this.refreshTip();
    this.strip.setColouring(m, st.opts, s, metricSpec(m)?.label ?? m);
    this.toolbar.showMetric(m, this.showTarget(), st.opts.target);
  }

  private showTarget(): boolean {
    return !!metricSpec(this.shownMetric())?.per_target && !!this.data && this.data.nTargets > 1;
  }

  // ------------------------------------------------------------------ layer / τ / metric / selection
  setLayer(l: number, local: boolean): void {
    const d = this.data;
    if (!d) {
      this.state.layer = l;
      return;
    }
    l = Math.max(0, Math.min(d.R - 1, Math.round(l)));
    const changed = l !== this.state.layer;
    if (local && changed) this.state.scrubLayer(l);
    else this.state.layer = l;
    this.strip.setLayer(l); // first: it reads the strip's layout, still clean before the writes below
    this.toolbar.showLayer(d, l);
    this.heatmap.setLayer(l);
    if (this.tip && this.tip.row === null) this.refreshTip();
  }

  private setTau(idx: number): void {
    const d = this.data;
    if (!d || !d.projGrid) return;
    const i = Math.max(0, Math.min(d.meta.tau_grid.length - 1, idx));
    this.state.scrubTau(i, d.meta.tau_grid[i]);
    this.toolbar.showTau(d, i);
    if (metricSpec(this.shownMetric())?.tau_array) this.redraw();
    this.refreshTip();
    this.refreshPinned();
  }

  setMetric(m: MetricName, local: boolean): void {
    const st = this.state;
    if (this.data && !isMetric(m)) return;
    if (local && this.data && !available(this.data, m)) {
      this.toolbar.showMetric(this.shownMetric(), this.showTarget(), st.opts.target); // refuse: revert the select
      return;
    }
    if (local && m !== st.metric) st.writeMetric(m);
    else st.metric = m; // a chosen metric this payload lacks is kept (shownMetric falls back)
    if (this.data) this.redraw();
  }

  private toggleSelected(c: Cell): void {
    const s = this.state.selected;
    this.setSelected(s && s.row === c.row && s.pos === c.pos ? null : c, true);
  }

  setSelected(c: Cell | null, local: boolean): void {
    const d = this.data;
    if (c && d && (c.row >= d.R || c.pos >= d.T || c.row < 0 || c.pos < 0)) c = null;
    if (local) this.state.writeSelected(c);
    else this.state.selected = c;
    this.heatmap.setSelected(c);
    this.strip.setSelectedPos(c ? c.pos : null);
    if (local) this.steer.pinnedChanged();
    this.refreshPinned();
  }

  // ------------------------------------------------------------------ tooltip & pinned panel
  private showTip(row: number | null, pos: number, anchor: () => DOMRect): void {
    this.tip = { row, pos, anchor };
    this.refreshTip();
  }

  private refreshTip(): void {
    const d = this.data;
    const t = this.tip;
    if (!t || !d || t.pos >= d.T) return this.hideTip();
    const row = t.row ?? this.state.layer;
    if (row >= d.R) return this.hideTip();
    const a = this.after;
    const { shown, run } = this.described(d);
    const topk = this.topk.get(shown, row, t.pos, HOVER_DWELL_MS, () => this.tip === t && this.refreshTip(), run);
    const info = this.runNote(cellInfo(shown, row, t.pos, this.state.opts, topk), run);
    if (a) info.append(compareLines(d, a, this.shownMetric(), row, t.pos, this.state.opts, shown === a));
    this.tooltip.show(info, t.anchor());
  }

  /** The run the tooltip and the pinned panel describe: the steered one in after and difference mode (its own
   *  top-k: details with run "after"), else the plain one. */
  private described(d: LensData): { shown: LensData; run: DetailsRun } {
    const a = this.after;
    return a && this.steer.mode !== "before" ? { shown: a, run: "after" } : { shown: d, run: "plain" };
  }

  /** The steered run's cell details say so above the top-k list. */
  private runNote(info: HTMLDivElement, run: DetailsRun): HTMLDivElement {
    if (run !== "after") return info;
    const what = this.steer.mode === "difference" ? "top-k below: the steered run's (after), not a difference" : "top-k below: the steered run's (after)";
    info.querySelector(".rw-topk")?.prepend(h("div", { class: "rw-topk-run", text: what }));
    return info;
  }

  private hideTip(): void {
    this.tip = null;
    this.tooltip.hide();
  }

  private refreshPinned(): void {
    const d = this.data;
    const c = this.state.selected;
    this.writers.show(d, c); // asks for the pinned cell's writers at once (not after the top-k)
    if (!c || !d) {
      this.pinned.hidden = true;
      this.pinned.replaceChildren();
      return;
    }
    const { shown, run } = this.described(d);
    const topk = this.topk.get(shown, c.row, c.pos, 0, () => this.state.selected === c && this.refreshPinned(), run);
    const info = this.runNote(cellInfo(shown, c.row, c.pos, this.state.opts, topk), run);
    const unpin = h("button", { class: "rw-unpin", type: "button", text: "unpin", title: "Unpin this cell (Escape)" });
    unpin.addEventListener("click", () => this.setSelected(null, true));
    this.pinned.replaceChildren(h("div", { class: "rw-pinned-head" }, h("span", { text: "pinned cell" }), unpin), info);
    this.pinned.hidden = false;
  }

  /** `w`: hide / show the Writers panel of the pinned cell; nothing pinned: pin the hovered cell (else the
   *  current layer's last position), which opens it. */
  private writersKey(): void {
    const d = this.data;
    if (!d) return;
    if (this.state.selected) return void this.writers.toggle();
    const t = this.tip;
    this.setSelected(t ? { row: t.row ?? this.state.layer, pos: t.pos } : { row: this.state.layer, pos: d.T - 1 }, true);
  }

  // ------------------------------------------------------------------ status, static, PNG
  showStatus(busy: boolean, progress: number | null, stage = ""): void {
    this.root.classList.toggle("rw-busy", busy);
    this.header.showStatus(busy, progress, stage);
  }

  setStatic(on: boolean): void {
    this.root.classList.toggle("rw-static", on);
    this.header.setStatic(on);
    this.editor.setStatic(on);
    this.steer.setStatic(on);
  }

  setEditorValues(v: EditValues): void {
    this.editor.setValues(v);
  }

  private async downloadPNG(): Promise<void> {
    const d = this.data;
    if (!d) return;
    try {
      const st = this.state;
      const blob = await this.heatmap.toPNG(`${d.meta.model_name} · ${scaleFor(d, this.shownMetric(), st.opts).title}`);
      const url = URL.createObjectURL(blob);
      const a = h("a", { class: "rw-download", href: url, download: `logit-lens-${this.shownMetric()}.png`, hidden: true });
      this.root.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
    } catch (e) {
      this.hooks.localError(`PNG export failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  dispose(): void {
    this.topk.cancel();
    this.writers.dispose();
    this.steer.dispose();
    this.heatmap.dispose();
    this.strip.dispose();
    this.root.remove();
  }
}

/** Notebook 7 (and any Lumino app with `bubblingKeydown` off) handles keydown on the document in the
 *  *capture* phase, before the widget sees the event, so stopping propagation at the widget's root is too
 *  late: arrow keys moved between notebook cells. Lumino skips shortcut matching for an event whose target
 *  carries `data-lm-suppress-shortcuts`; a window capture listener (which runs before the document's) marks
 *  the target of an unmodified key inside a widget for the duration of that one dispatch. Modified keys
 *  (Shift+Enter, Ctrl+S...) still reach the notebook. Installed once per page. */
let keyGuard = false;
function guardKeysFromLumino(): void {
  if (keyGuard || typeof window === "undefined") return;
  keyGuard = true;
  const ATTR = "data-lm-suppress-shortcuts";
  window.addEventListener(
    "keydown",
    (e: KeyboardEvent) => {
      if (e.ctrlKey || e.metaKey || e.altKey || e.shiftKey) return;
      const t = e.target;
      if (!(t instanceof Element) || !t.closest(".rw-root") || t.hasAttribute(ATTR)) return;
      t.setAttribute(ATTR, "true");
      setTimeout(() => t.removeAttribute(ATTR), 0);
    },
    true,
  );
}

/** Targets to suggest in the empty targets field: Python's checked single tokens when the payload
 *  has them, else the last position's top-1 predictions (ids of this vocabulary) at the last rows. */
export function suggestedTargets(d: LensData): string[] {
  if (d.meta.suggested_targets && d.meta.suggested_targets.length) return d.meta.suggested_targets.slice(0, 2);
  const out: string[] = [];
  for (let r = d.R - 1; r >= 0 && out.length < 2; r--) {
    const s = d.strings.get(d.top1Id[r * d.T + d.T - 1]);
    if (s !== undefined && s.trim() !== "" && !out.includes(s)) out.push(s);
  }
  return out;
}
