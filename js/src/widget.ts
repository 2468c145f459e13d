// anywidget entry point: `export default { render }`. Wires one view to the model: synced traits
// and custom messages in, write-backs and edit/details messages out. Only the anywidget model API
// is used (model.ts), so the same render() runs in JupyterLab, Notebook 7, VS Code, Colab and the
// static HTML export. What each piece does lives in its own module:
//   view.ts (DOM + local interactions), viewstate.ts (layer/τ/metric/selected + write-backs),
//   edits.ts (this view's pending edits), topk.ts + rpc.ts (lazy details), codecs.ts (payload),
//   protocol.ts (constants shared with Python), tau.ts (the one τ/k choice), theme.ts,
//   stream.ts (streamed stages merged into the payload being shown).

import "./styles.css";
import { decodePayload, isMeta, payloadLength, requiredBytes, type LensData } from "./codecs";
import { PendingEdits } from "./edits";
import { newViewId, subscriber, type AnyModel } from "./model";
import { versionProblem } from "./protocol";
import { DetailsClient } from "./rpc";
import { watchTheme } from "./theme";
import { TopKSource } from "./topk";
import { StreamMerger, isDelta, type Wire } from "./stream";
import { LensView } from "./view";
import { ViewState } from "./viewstate";

export type { AnyModel } from "./model";
export { EDIT_DEBOUNCE_MS } from "./edits";
export { WRITE_BACK_MS } from "./viewstate";

function render({ model, el }: { model: AnyModel; el: HTMLElement }): () => void {
  const viewId = newViewId();
  const state = new ViewState(model);
  const details = new DetailsClient((msg) => model.send(msg), 10_000, viewId);
  let localError = "";
  const view = new LensView(state, new TopKSource(details, () => !!model.get("_static")), {
    editInput: () => edits.input(),
    editCommit: () => edits.commit(),
    localError: (msg) => {
      localError = msg;
      showError();
    },
  });
  const edits = new PendingEdits(model, viewId, () => view.editor.values(), () => showStatus(), () => view.visible);
  const merger = new StreamMerger();
  view.root.dataset.view = viewId;
  el.append(view.root);

  function showStatus(): void {
    const computing = model.get("status") === "computing";
    view.showStatus(computing || edits.busy, computing ? Number(model.get("progress")) : null);
  }

  function showError(): void {
    view.header.showError(String(model.get("error") ?? "") || localError);
  }

  function syncEditor(): void {
    const v = edits.syncFromModel();
    if (v) view.setEditorValues(v);
  }

  /** Decode `_meta` + `_payload` and show them; a payload the view cannot read leaves the last good
   *  view in place and says why. */
  function loadPayload(): void {
    const meta = model.get("_meta");
    const payload = model.get("_payload");
    if (!isMeta(meta)) return view.showEmpty();
    const problem = versionProblem(meta);
    if (problem) {
      localError = problem;
      return showError();
    }
    if (payloadLength(payload) < requiredBytes(meta)) return; // the other half hasn't arrived yet
    let d: LensData;
    try {
      d = decodePayload(meta, payload);
    } catch (e) {
      localError = `could not decode the payload: ${e instanceof Error ? e.message : String(e)}`;
      return showError();
    }
    localError = "";
    if (payload) merger.shown(meta, payload);
    details.setSeq(meta.seq);
    edits.payload(meta);
    state.selected = ViewState.readSelected(model);
    view.applyPayload(d, Number(model.get("layer")) || 0);
    showStatus();
    showError();
  }

  /** A streamed stage merged into the payload being built: show it as it is so far. */
  function showStage(w: Wire): void {
    let d: LensData;
    try {
      d = decodePayload(w.meta, w.blob);
    } catch {
      return; // the final payload follows; it will say what is wrong
    }
    details.setSeq(w.meta.seq);
    view.applyPayload(d, Number(model.get("layer")) || 0);
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

  const sub = subscriber(model);
  sub.on("change:_meta", queueLoad);
  sub.on("change:_payload", queueLoad);
  sub.on("change:status", showStatus);
  sub.on("change:progress", showStatus);
  sub.on("change:error", showError);
  sub.on("change:layer", () => {
    if (state.layerPending()) return; // mid-scrub: the local value wins
    const v = Number(model.get("layer"));
    if (Number.isFinite(v) && v !== state.layer) view.setLayer(v, false);
  });
  // tau: Python answers a τ write with a new payload; nothing to do until then.
  sub.on("change:metric", () => {
    const m = model.get("metric");
    if (m !== state.metric) view.setMetric(m, false);
  });
  sub.on("change:selected", () => {
    const c = ViewState.readSelected(model);
    const s = state.selected;
    if (c?.row !== s?.row || c?.pos !== s?.pos) view.setSelected(c, false);
  });
  sub.on("change:prompt", syncEditor);
  sub.on("change:targets", syncEditor);
  sub.on("change:top_k", syncEditor);
  sub.on("change:lens", syncEditor);
  sub.on("change:_static", () => view.setStatic(!!model.get("_static")));
  sub.on("msg:custom", (msg: unknown, buffers?: (DataView | ArrayBuffer)[]) => {
    if (isDelta(msg)) {
      const w = merger.apply(msg, buffers?.[0]);
      if (w) showStage(w);
      return;
    }
    if (!edits.handle(msg)) details.handle(msg);
  });

  // size and theme: the heatmap re-lays out (and repaints) when its width or the colours change
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => view.heatmap.resize()) : null;
  ro?.observe(view.root);
  const unwatchTheme = watchTheme(() => view.heatmap.themeChanged());

  // first paint
  syncEditor();
  view.setStatic(!!model.get("_static"));
  showStatus();
  showError();
  loadPayload();
  requestAnimationFrame(() => view.heatmap.resize());

  return () => {
    sub.dispose();
    state.flush();
    edits.dispose();
    ro?.disconnect();
    unwatchTheme();
    details.dispose();
    view.dispose();
  };
}

export default { render };
