// anywidget entry point: `export default { render }`. Wires the model (synced traits + custom
// messages) to the views. Only the anywidget model API is used (get/set/on/off/save_changes/send),
// so the same render() runs in JupyterLab, Notebook 7, VS Code, Colab and the static HTML export.

import "./styles.css";
import { decodePayload, isMeta, payloadLength, requiredBytes, type LensData } from "./codecs";
import { Editor, Toolbar, type EditValues } from "./controls";
import { debounce, h } from "./dom";
import { Heatmap, type Cell } from "./heatmap";
import { Legend } from "./legend";
import { available, isMetric, scaleFor, type MetricName, type ViewOpts } from "./metrics";
import { DetailsClient, StaleError } from "./rpc";
import { TokenStrip } from "./tokens";
import { Tooltip, cellInfo, type TopK } from "./tooltip";

/* eslint-disable @typescript-eslint/no-explicit-any */
export interface AnyModel {
  get(key: string): any;
  set(key: string, value: unknown): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

export const EDIT_DEBOUNCE_MS = 500;
export const WRITE_BACK_MS = 600;
const HOVER_DWELL_MS = 60;
const EDIT_SAFETY_MS = 120_000;

function render({ model, el }: { model: AnyModel; el: HTMLElement }): () => void {
  // ---------------------------------------------------------------- state
  let data: LensData | null = null;
  let metric: MetricName = isMetric(model.get("metric")) ? model.get("metric") : "projection";
  let layer = Number(model.get("layer")) || 0;
  const opts: ViewOpts = { tauIdx: null, target: 0 };
  let selected: Cell | null = null;
  let editSeq = 0; // last edit seq sent by this view
  let awaiting = false; // an edit is out and unanswered
  let sawComputing = false;
  let localError = "";
  let tip: { row: number | null; pos: number; anchor: () => DOMRect } | null = null; // row null = follows layer
  const cleanups: (() => void)[] = [];

  // ---------------------------------------------------------------- views
  const root = h("div", { class: "rw-root" });
  // JupyterLab (Lumino) handles keydown on the document, bubbling, and in command mode takes plain
  // keys on a focused non-text element (our sliders, selects, heatmap) as notebook shortcuts: arrows
  // would move between cells instead of layers. Unmodified keys stay inside the widget; modified
  // ones (Shift+Enter, Ctrl+S...) still reach JupyterLab.
  const keepKeys = (e: KeyboardEvent) => {
    if (!(e.ctrlKey || e.metaKey || e.altKey || e.shiftKey)) e.stopPropagation();
  };
  root.addEventListener("keydown", keepKeys);
  const name = h("span", { class: "rw-model-name" });
  const demo = h("span", { class: "rw-badge rw-badge-demo", text: "demo model", hidden: true, title: "A small demo model: English-like locally, no facts" });
  const staticBadge = h("span", { class: "rw-badge rw-badge-static", text: "static export", hidden: true });
  const shape = h("span", { class: "rw-shape" });
  const progressBar = h("span", { class: "rw-progress-bar" });
  const statusText = h("span", { class: "rw-status-text" });
  const status = h(
    "span",
    { class: "rw-status", role: "status", "aria-live": "polite", hidden: true },
    h("span", { class: "rw-spinner", "aria-hidden": "true" }),
    statusText,
    h("span", { class: "rw-progress", "aria-hidden": "true" }, progressBar),
  );
  const header = h("div", { class: "rw-header" }, name, demo, staticBadge, shape, status);
  const errorText = h("span", { class: "rw-error-text" });
  const errorBox = h("div", { class: "rw-error", role: "alert", hidden: true }, h("strong", { text: "Error: " }), errorText);
  const empty = h("div", { class: "rw-empty", text: "No lens computed yet." });

  const tooltip = new Tooltip(root);
  const legend = new Legend();
  const pinned = h("div", { class: "rw-pinned", hidden: true, "aria-live": "polite" });

  const details = new DetailsClient((msg) => model.send(msg));

  const editor = new Editor(() => editDebounce.call());
  const toolbar = new Toolbar({
    layer: (l) => setLayer(l, true),
    tau: (i) => setTau(i),
    metric: (m) => setMetric(m, true),
    target: (t) => {
      opts.target = t;
      redraw();
    },
    png: () => void downloadPNG(),
  });
  const strip = new TokenStrip({
    hover: (pos, chip) => {
      if (pos === null || !chip) return hideTip();
      showTip(null, pos, () => chip.getBoundingClientRect());
    },
    click: (pos) => toggleSelected({ row: layer, pos }),
  });
  const heatmap = new Heatmap({
    hover: (c) => {
      if (!c) return hideTip();
      showTip(c.row, c.pos, () => heatmap.cellRect(c));
    },
    click: (c) => toggleSelected(c),
    step: (s) => setLayer(layer + s, true),
    unpin: () => setSelected(null, true),
    view: (first, last) => strip.setWindow(first, last),
  });

  const body = h("div", { class: "rw-body", hidden: true }, toolbar.el, strip.el, heatmap.el, legend.el, pinned);
  root.append(header, errorBox, editor.el, empty, body, tooltip.el);
  el.append(root);

  // ---------------------------------------------------------------- edits (prompt/targets/top_k)
  let requested: EditValues = modelValues();
  function modelValues(): EditValues {
    return {
      prompt: String(model.get("prompt") ?? ""),
      targets: ((model.get("targets") as string[]) ?? []).map(String),
      top_k: Number(model.get("top_k")) || 10,
    };
  }
  const editDebounce = debounce(() => {
    if (model.get("_static")) return;
    const v = editor.values();
    const changes: Partial<EditValues> = {};
    if (v.prompt !== requested.prompt) changes.prompt = v.prompt;
    if (v.targets.join("\u0000") !== requested.targets.join("\u0000") || v.targets.length !== requested.targets.length) {
      changes.targets = v.targets;
    }
    if (v.top_k !== requested.top_k) changes.top_k = v.top_k;
    if (!Object.keys(changes).length) return;
    requested = { ...requested, ...changes };
    editSeq += 1;
    awaiting = true;
    sawComputing = false;
    editSafety.call();
    model.send({ type: "edit", seq: editSeq, changes });
    showStatus();
  }, EDIT_DEBOUNCE_MS);
  const editSafety = debounce(() => {
    awaiting = false;
    showStatus();
  }, EDIT_SAFETY_MS);

  function syncEditorFromModel(): void {
    if (editDebounce.pending()) return; // the user is typing: their text wins
    const v = modelValues();
    requested = v;
    editor.setValues(v);
  }

  // ---------------------------------------------------------------- layer / τ / metric / selection
  const layerWrite = debounce(() => {
    model.set("layer", layer);
    model.save_changes();
  }, WRITE_BACK_MS);
  const tauWrite = debounce(() => {
    if (!data || opts.tauIdx === null) return;
    model.set("tau", data.meta.tau_grid[opts.tauIdx]);
    model.save_changes();
  }, WRITE_BACK_MS);

  function setLayer(l: number, local: boolean): void {
    if (!data) {
      layer = l;
      return;
    }
    l = Math.max(0, Math.min(data.R - 1, Math.round(l)));
    const changed = l !== layer;
    layer = l;
    toolbar.showLayer(data, layer);
    strip.setLayer(layer);
    heatmap.setLayer(layer);
    if (tip && tip.row === null) refreshTip();
    if (local && changed) layerWrite.call();
  }

  function setTau(idx: number): void {
    if (!data || !data.projGrid) return;
    opts.tauIdx = Math.max(0, Math.min(data.meta.tau_grid.length - 1, idx));
    toolbar.showTau(data, opts.tauIdx);
    if (metric === "projection") redraw();
    refreshTip();
    refreshPinned();
    tauWrite.call();
  }

  function setMetric(m: MetricName, local: boolean): void {
    if (!isMetric(m)) return;
    if (data && !available(data, m)) {
      if (local) toolbar.showMetric(metric, showTarget(), opts.target); // refuse: revert the select
      return;
    }
    const changed = m !== metric;
    metric = m;
    if (data) redraw();
    if (local && changed) {
      model.set("metric", m);
      model.save_changes();
    }
  }

  const showTarget = () => metric === "target_rank" && !!data && data.nTargets > 1;

  function toggleSelected(c: Cell): void {
    const same = selected && selected.row === c.row && selected.pos === c.pos;
    setSelected(same ? null : c, true);
  }

  function setSelected(c: Cell | null, local: boolean): void {
    if (c && data && (c.row >= data.R || c.pos >= data.T || c.row < 0 || c.pos < 0)) c = null;
    selected = c;
    heatmap.setSelected(c);
    strip.setSelectedPos(c ? c.pos : null);
    refreshPinned();
    if (local) {
      model.set("selected", c ? [c.row, c.pos] : []);
      model.save_changes();
    }
  }

  function readSelected(): Cell | null {
    const s = model.get("selected");
    return Array.isArray(s) && s.length === 2 ? { row: Number(s[0]), pos: Number(s[1]) } : null;
  }

  // ---------------------------------------------------------------- drawing
  function redraw(): void {
    if (!data) return;
    const s = scaleFor(data, metric, opts);
    heatmap.setData(data, metric, opts, s);
    legend.set(metric, s);
    toolbar.showMetric(metric, showTarget(), opts.target);
  }

  function loadPayload(): void {
    const meta = model.get("_meta");
    const payload = model.get("_payload");
    if (!isMeta(meta)) {
      if (!data) {
        empty.hidden = false;
        body.hidden = true;
      }
      return;
    }
    if (payloadLength(payload) < requiredBytes(meta)) return; // the other half hasn't arrived yet
    let d: LensData;
    try {
      d = decodePayload(meta, payload);
    } catch (e) {
      localError = `could not decode the payload: ${e instanceof Error ? e.message : String(e)}`;
      showError();
      return;
    }
    localError = "";
    data = d;
    details.setSeq(meta.seq);
    if (meta.client_seq >= editSeq && awaiting) {
      awaiting = false;
      editSafety.cancel();
    }
    if (!tauWrite.pending()) opts.tauIdx = null;
    opts.target = Math.min(opts.target, Math.max(0, d.nTargets - 1));
    if (!available(d, metric)) metric = "projection";

    name.textContent = meta.model_name || "model";
    demo.hidden = !meta.is_demo;
    shape.textContent = `${d.T} tokens · ${d.L} layers · d_model ${meta.d_model}`;
    empty.hidden = true;
    body.hidden = false;

    toolbar.setData(d);
    toolbar.showTau(d, opts.tauIdx);
    const l = Math.max(0, Math.min(d.R - 1, layerWrite.pending() ? layer : Number(model.get("layer")) || 0));
    layer = l;
    strip.setData(d, layer);
    heatmap.setLayer(layer);
    toolbar.showLayer(d, layer);
    redraw();
    setSelected(readSelected(), false);
    refreshTip();
    showStatus();
    showError();
  }

  let loadQueued = false;
  function queueLoad(): void {
    if (loadQueued) return;
    loadQueued = true;
    queueMicrotask(() => {
      loadQueued = false;
      loadPayload();
    });
  }

  // ---------------------------------------------------------------- tooltip & pinned panel
  let dwell: ReturnType<typeof setTimeout> | null = null;

  /** Top-k for a cell: local arrays (export), cache, or a details request. Hover requests wait
   *  for the pointer to rest (`dwell`, superseded by the next hover); the pinned panel asks now. */
  function topkFor(row: number, pos: number, dwellMs: number, onReady: () => void): TopK {
    const d = data!;
    if (d.topIds && d.topProbs && d.topK) {
      const o = (row * d.T + pos) * d.topK;
      return {
        state: "ok",
        ids: Array.from(d.topIds.subarray(o, o + d.topK)),
        probs: Array.from(d.topProbs.subarray(o, o + d.topK)),
        strings: d.strings,
      };
    }
    if (model.get("_static")) return { state: "error", message: "not included in this export" };
    const seq = d.meta.seq;
    const hit = details.cached(seq, pos);
    if (hit) return { state: "ok", ids: hit.topIds[row] ?? [], probs: hit.topProbs[row] ?? [], strings: hit.strings };
    const err = errors.get(`${seq}:${pos}`);
    if (err) return { state: "error", message: err };
    const ask = () =>
      details.request(seq, pos).then(
        () => onReady(),
        (e: Error) => {
          if (e instanceof StaleError) return;
          errors.set(`${seq}:${pos}`, e.message);
          onReady();
          // let a later hover retry (timeouts may be transient)
          setTimeout(() => errors.delete(`${seq}:${pos}`), 1000);
        },
      );
    if (dwellMs <= 0) void ask();
    else {
      if (dwell !== null) clearTimeout(dwell);
      dwell = setTimeout(() => {
        dwell = null;
        void ask();
      }, dwellMs);
    }
    return { state: "loading" };
  }
  const errors = new Map<string, string>();

  function showTip(row: number | null, pos: number, anchor: () => DOMRect): void {
    tip = { row, pos, anchor };
    refreshTip();
  }

  function refreshTip(): void {
    if (!tip || !data || tip.pos >= data.T) return hideTip();
    const t = tip;
    const row = t.row ?? layer;
    if (row >= data.R) return hideTip();
    const content = cellInfo(data, row, t.pos, opts, topkFor(row, t.pos, HOVER_DWELL_MS, () => tip === t && refreshTip()));
    tooltip.show(content, t.anchor());
  }

  function hideTip(): void {
    tip = null;
    tooltip.hide();
  }

  function refreshPinned(): void {
    if (!selected || !data) {
      pinned.hidden = true;
      pinned.replaceChildren();
      return;
    }
    const c = selected;
    const info = cellInfo(data, c.row, c.pos, opts, topkFor(c.row, c.pos, 0, () => selected === c && refreshPinned()));
    const unpin = h("button", { class: "rw-unpin", type: "button", text: "unpin", title: "Unpin this cell (Escape)" });
    unpin.addEventListener("click", () => setSelected(null, true));
    pinned.replaceChildren(h("div", { class: "rw-pinned-head" }, h("span", { text: "pinned cell" }), unpin), info);
    pinned.hidden = false;
  }

  // ---------------------------------------------------------------- status & errors
  function showStatus(): void {
    const st = model.get("status");
    const busy = st === "computing" || awaiting;
    root.classList.toggle("rw-busy", busy);
    status.hidden = !busy;
    const p = Number(model.get("progress"));
    const known = st === "computing" && Number.isFinite(p) && p > 0;
    statusText.textContent = known ? `computing… ${Math.round(p * 100)}%` : "computing…";
    progressBar.style.width = known ? `${Math.max(0, Math.min(1, p)) * 100}%` : "";
    status.classList.toggle("rw-indeterminate", !known);
  }

  function showError(): void {
    const msg = String(model.get("error") ?? "") || localError;
    errorText.textContent = msg;
    errorBox.hidden = !msg;
  }

  function showStatic(): void {
    const st = !!model.get("_static");
    root.classList.toggle("rw-static", st);
    staticBadge.hidden = !st;
    editor.setStatic(st);
  }

  async function downloadPNG(): Promise<void> {
    if (!data) return;
    try {
      const blob = await heatmap.toPNG(`${data.meta.model_name} · ${scaleFor(data, metric, opts).title}`);
      const url = URL.createObjectURL(blob);
      const a = h("a", { class: "rw-download", href: url, download: `logit-lens-${metric}.png`, hidden: true });
      root.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 30_000);
    } catch (e) {
      localError = `PNG export failed: ${e instanceof Error ? e.message : String(e)}`;
      showError();
    }
  }

  // ---------------------------------------------------------------- model events
  const on = (evt: string, cb: (...a: any[]) => void) => {
    model.on(evt, cb);
    cleanups.push(() => model.off(evt, cb));
  };
  on("change:_meta", queueLoad);
  on("change:_payload", queueLoad);
  on("change:status", () => {
    const st = model.get("status");
    if (st === "computing") sawComputing = true;
    else if (sawComputing && awaiting) {
      // the kernel finished (an unchanged or rejected edit answers with no payload)
      awaiting = false;
      sawComputing = false;
      editSafety.cancel();
    }
    showStatus();
  });
  on("change:progress", showStatus);
  on("change:error", () => {
    if (model.get("error")) {
      awaiting = false;
      editSafety.cancel();
      showStatus();
    }
    showError();
  });
  on("change:layer", () => {
    if (layerWrite.pending()) return; // mid-scrub: the local value wins
    const v = Number(model.get("layer"));
    if (Number.isFinite(v) && v !== layer) setLayer(v, false);
  });
  on("change:tau", () => {
    // Python answers a tau write with a new payload; nothing to do until then.
  });
  on("change:metric", () => {
    const m = model.get("metric");
    if (m !== metric) setMetric(m, false);
  });
  on("change:selected", () => {
    const c = readSelected();
    if (c?.row !== selected?.row || c?.pos !== selected?.pos) setSelected(c, false);
  });
  on("change:prompt", syncEditorFromModel);
  on("change:targets", syncEditorFromModel);
  on("change:top_k", syncEditorFromModel);
  on("change:_static", showStatic);
  on("msg:custom", (msg: unknown) => {
    details.handle(msg);
  });

  // ---------------------------------------------------------------- size
  const ro = typeof ResizeObserver !== "undefined"
    ? new ResizeObserver(() => heatmap.resize())
    : null;
  ro?.observe(root);

  // ---------------------------------------------------------------- first paint
  syncEditorFromModel();
  showStatic();
  showStatus();
  showError();
  loadPayload();
  requestAnimationFrame(() => heatmap.resize());

  return () => {
    for (const c of cleanups) c();
    try {
      layerWrite.flush();
      tauWrite.flush();
    } catch {
      /* model already closed */
    }
    editDebounce.cancel();
    editSafety.cancel();
    if (dwell !== null) clearTimeout(dwell);
    ro?.disconnect();
    details.dispose();
    heatmap.dispose();
    strip.dispose();
    root.remove();
  };
}

export default { render };
