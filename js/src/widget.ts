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
import { newViewId, subscriber, type AnyModel, type RenderProps } from "./model";
import { versionProblem, type WidgetModel } from "./protocol";
import { DetailsClient } from "./rpc";
import { watchTheme } from "./theme";
import { TopKSource } from "./topk";
import { StreamMerger, isDelta, type Delta, type Wire } from "./stream";
import { LensView } from "./view";
import { decodeAfter } from "./steerdata";
import type { SteerInfo } from "./steer";
import { ViewState } from "./viewstate";
import { WritersClient } from "./writers";

export type { AnyModel } from "./model";
export { EDIT_DEBOUNCE_MS } from "./edits";
export { WRITE_BACK_MS } from "./viewstate";

/** One view wired to the model: payloads and streamed stages in, status and errors shown. */
class Wiring {
  readonly viewId = newViewId();
  readonly state: ViewState;
  readonly details: DetailsClient;
  readonly view: LensView;
  readonly edits: PendingEdits;
  readonly merger = new StreamMerger();
  /** the steering panel's after run streams too: its own merger, numbered by after_seq */
  readonly afterMerger = new StreamMerger();
  private localError = "";
  private loadQueued = false;

  constructor(private readonly model: AnyModel) {
    this.state = new ViewState(model);
    this.details = new DetailsClient((msg) => model.send(msg), 10_000, this.viewId);
    this.view = new LensView(this.state, new TopKSource(this.details, () => !!model.get("_static")), {
      editInput: () => this.edits.input(),
      editCommit: () => this.edits.commit(),
      localError: (msg) => {
        this.localError = msg;
        this.showError();
      },
      steerSend: (spec) => this.edits.sendChanges({ steer: spec }),
    }, new WritersClient((msg) => model.send(msg), 10_000, this.viewId));
    this.edits = new PendingEdits(model, this.viewId, () => this.view.editor.values(), () => this.showStatus(), () => this.view.visible);
    this.view.root.dataset.view = this.viewId;
  }

  showStatus(): void {
    const computing = this.model.get("status") === "computing";
    const stage = computing ? String(this.model.get("stage") ?? "") : ""; // a remote backend's queued / running / reading out
    this.view.showStatus(computing || this.edits.busy, computing ? Number(this.model.get("progress")) : null, stage);
    this.showAfterPending(computing);
  }

  /** Steering on and the kernel busy (an edit, or the after run itself): a new after run is coming. Its progress
   *  is `_steer_info.progress` once Python runs it (the plain run is computed first). */
  showAfterPending(computing = this.model.get("status") === "computing"): void {
    const info = (this.model.get("_steer_info") ?? {}) as SteerInfo;
    const busy = this.view.steer.isOn && (computing || this.edits.busy || !!info.computing);
    this.view.setAfterPending(busy, info.computing ? Number(info.progress ?? 0) : null);
  }

  showError(): void {
    this.view.header.showError(String(this.model.get("error") ?? "") || this.localError);
  }

  syncEditor(): void {
    const v = this.edits.syncFromModel();
    if (v) this.view.setEditorValues(v);
  }

  /** Decode `_meta` + `_payload` and show them; a payload the view cannot read leaves the last good
   *  view in place and says why. */
  loadPayload(): void {
    const meta = this.model.get("_meta");
    const payload = this.model.get("_payload");
    if (!isMeta(meta)) return this.view.showEmpty();
    const problem = versionProblem(meta);
    if (problem) {
      this.localError = problem;
      return this.showError();
    }
    if (payloadLength(payload) < requiredBytes(meta)) return; // the other half hasn't arrived yet
    let d: LensData;
    try {
      d = decodePayload(meta, payload);
    } catch (e) {
      this.localError = `could not decode the payload: ${e instanceof Error ? e.message : String(e)}`;
      return this.showError();
    }
    this.localError = "";
    if (payload) this.merger.shown(meta, payload);
    this.details.setSeq(meta.seq);
    this.edits.payload(meta);
    this.state.selected = ViewState.readSelected(this.model);
    this.view.applyPayload(d, Number(this.model.get("layer")) || 0);
    this.loadAfter();
    this.showStatus();
    this.showError();
  }

  /** The steering panel's after payload, when it belongs to the payload shown. */
  loadAfter(): void {
    const d = this.view.data;
    if (!d) return;
    try {
      const meta = this.model.get("_steer_meta");
      const payload = this.model.get("_steer_payload");
      const after = decodeAfter(meta, payload, d.meta.seq);
      const afterSeq = Number((meta as { after_seq?: number } | null)?.after_seq ?? 0);
      // the final after payload: the base of the next after stream's kept positions (numbered by after_seq)
      if (after && payload && isMeta(meta)) this.afterMerger.shown({ ...meta, seq: afterSeq }, payload);
      this.details.setAfterSeq(afterSeq);
      this.view.setAfter(after);
    } catch (e) {
      this.view.setAfter(null);
      this.localError = `could not decode the steered payload: ${e instanceof Error ? e.message : String(e)}`;
      this.showError();
    }
  }

  showSteerInfo(): void {
    const info = (this.model.get("_steer_info") ?? {}) as SteerInfo;
    this.view.steer.setInfo(info);
    this.view.steer.describe(info);
    this.showAfterPending();
  }

  /** A streamed stage merged into the payload being built: show it as it is so far. */
  showStage(w: Wire): void {
    let d: LensData;
    try {
      d = decodePayload(w.meta, w.blob);
    } catch {
      return; // the final payload follows; it will say what is wrong
    }
    this.details.setSeq(w.meta.seq);
    this.view.applyPayload(d, Number(this.model.get("layer")) || 0);
  }

  /** A streamed stage of the after run: shown (with the after_seq it streams as) when it pairs with the payload shown. */
  showAfterStage(msg: Delta, buffer: DataView | ArrayBuffer | undefined): void {
    const w = this.afterMerger.apply(msg, buffer);
    const d = this.view.data;
    if (!w || !d) return;
    const pair = Number((w.meta as unknown as { pair_seq?: number }).pair_seq);
    if (pair !== d.meta.seq) return; // it belongs to a payload this view is not showing: the final one follows
    let a: LensData;
    try {
      a = decodePayload({ ...w.meta, seq: pair }, w.blob); // paired like the final after payload (meta.seq = the plain one's)
    } catch {
      return;
    }
    this.details.setAfterSeq(w.meta.seq);
    this.view.setAfter(a, true, true);
  }

  queueLoad(): void {
    if (this.loadQueued) return;
    this.loadQueued = true;
    queueMicrotask(() => {
      this.loadQueued = false;
      this.loadPayload();
    });
  }

  /** Model events -> this view. */
  subscribe(sub: ReturnType<typeof subscriber>): void {
    const { model, state, view } = this;
    sub.on("change:_meta", () => this.queueLoad());
    sub.on("change:_payload", () => this.queueLoad());
    sub.on("change:status", () => this.showStatus());
    sub.on("change:progress", () => this.showStatus());
    sub.on("change:stage", () => this.showStatus());
    sub.on("change:error", () => this.showError());
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
    for (const k of ["prompt", "targets", "top_k", "lens"]) sub.on(`change:${k}`, () => this.syncEditor());
    sub.on("change:_static", () => view.setStatic(!!model.get("_static")));
    sub.on("change:_steer_meta", () => queueMicrotask(() => this.loadAfter()));
    sub.on("change:_steer_payload", () => queueMicrotask(() => this.loadAfter()));
    sub.on("change:_steer_info", () => this.showSteerInfo());
    sub.on("change:steer", () => view.steer.setSpec(model.get("steer")));
    sub.on("msg:custom", (msg: unknown, buffers?: (DataView | ArrayBuffer)[]) => {
      if (isDelta(msg) && msg.run === "after") return this.showAfterStage(msg, buffers?.[0]);
      if (isDelta(msg)) {
        const w = this.merger.apply(msg, buffers?.[0]);
        if (w) this.showStage(w);
        return;
      }
      if (!this.edits.handle(msg) && !this.details.handle(msg)) this.view.writers.client.handle(msg, buffers);
    });
  }
}

function render({ model, el }: RenderProps<WidgetModel>): () => void {
  const w = new Wiring(model);
  const { view } = w;
  el.append(view.root);
  const sub = subscriber(model);
  w.subscribe(sub);

  // size and theme: the heatmap re-lays out (and repaints) when its width or the colours change
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(() => view.heatmap.resize()) : null;
  ro?.observe(view.root);
  const unwatchTheme = watchTheme(() => view.heatmap.themeChanged());

  // first paint
  w.syncEditor();
  view.steer.setSpec(model.get("steer"));
  w.showSteerInfo();
  view.setStatic(!!model.get("_static"));
  w.showStatus();
  w.showError();
  w.loadPayload();
  requestAnimationFrame(() => view.heatmap.resize());

  return () => {
    sub.dispose();
    w.state.flush();
    w.edits.dispose();
    ro?.disconnect();
    unwatchTheme();
    w.details.dispose();
    view.dispose();
  };
}

export default { render };
