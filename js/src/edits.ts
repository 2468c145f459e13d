// Pending edits of ONE view (prompt, targets, top-k typed in the widget).
//
//   JS -> Python   {type: "edit", view, seq, changes, window?}  seq = 1, 2, ... per view; window =
//                                                           the positions in view, read first
//   Python -> JS   {type: "edit_done", view, seq}           after every edit it handled (computed,
//                                                           superseded by a newer one, or failed)
//
// Every view of a widget has its own random id; Python applies edits in arrival order whatever
// view sent them, and a view waits only for its own last edit. `changes` holds only the fields
// that differ from what this view last requested (or last saw from the model).

import { debounce } from "./dom";
import type { Meta } from "./codecs";
import type { EditValues } from "./controls";
import type { AnyModel } from "./model";

export const EDIT_DEBOUNCE_MS = 500;
const EDIT_SAFETY_MS = 120_000;
/** A lens switch is often answered from Python's cache at once: "computing…" only after this long. */
export const QUIET_MS = 250;

export class PendingEdits {
  private seq = 0; // last edit seq sent by this view
  private awaiting = false; // that edit is unanswered
  private requested: EditValues;
  private readonly debounced = debounce(() => this.send(), EDIT_DEBOUNCE_MS);
  private readonly safety = debounce(() => this.settle(), EDIT_SAFETY_MS);
  private quiet = false; // a lens-only edit within QUIET_MS: not shown as busy yet
  private readonly unquiet = debounce(() => {
    this.quiet = false;
    this.onChange();
  }, QUIET_MS);

  constructor(
    private readonly model: AnyModel,
    readonly viewId: string,
    private readonly read: () => EditValues,
    private readonly onChange: () => void,
    /** the positions in view [first, last): Python reads them first */
    private readonly window: () => [number, number] | null = () => null,
  ) {
    this.requested = this.modelValues();
  }

  modelValues(): EditValues {
    return {
      prompt: String(this.model.get("prompt") ?? ""),
      targets: ((this.model.get("targets") as string[]) ?? []).map(String),
      top_k: Number(this.model.get("top_k")) || 10,
      lens: String(this.model.get("lens") ?? "logit"),
    };
  }

  /** A keystroke in the editor: send once typing has paused. */
  input(): void {
    this.debounced.call();
  }

  /** The user is typing (their text wins over model echoes). */
  typing(): boolean {
    return this.debounced.pending();
  }

  /** This view's last edit is unanswered (a lens switch: and has been for QUIET_MS). */
  get busy(): boolean {
    return this.awaiting && !this.quiet;
  }

  /** A choice that needs no typing pause (the lens menu): send now. */
  commit(): void {
    this.debounced.cancel();
    this.send();
  }

  /** The model's values changed: they are what this view has "requested" from now on. */
  syncFromModel(): EditValues | null {
    if (this.typing()) return null;
    this.requested = this.modelValues();
    return this.requested;
  }

  private send(): void {
    if (this.model.get("_static")) return;
    const v = this.read();
    const changes: Partial<EditValues> = {};
    const r = this.requested;
    if (v.prompt !== r.prompt) changes.prompt = v.prompt;
    if (v.targets.length !== r.targets.length || v.targets.some((t, i) => t !== r.targets[i])) changes.targets = v.targets;
    if (v.top_k !== r.top_k) changes.top_k = v.top_k;
    if (v.lens !== r.lens) changes.lens = v.lens;
    if (!Object.keys(changes).length) return;
    this.requested = { ...r, ...changes };
    this.seq += 1;
    this.awaiting = true;
    this.quiet = Object.keys(changes).every((k) => k === "lens");
    if (this.quiet) this.unquiet.call();
    this.safety.call();
    const win = this.window();
    this.model.send({ type: "edit", view: this.viewId, seq: this.seq, changes, ...(win ? { window: win } : {}) });
    this.onChange();
  }

  /** Changes from outside the editor (the steering panel's `steer`), sent now as one edit (the caller
   *  debounces); acknowledged like the others. */
  sendChanges(changes: Record<string, unknown>): void {
    if (this.model.get("_static")) return;
    this.seq += 1;
    this.awaiting = true;
    this.quiet = false;
    this.safety.call();
    const win = this.window();
    this.model.send({ type: "edit", view: this.viewId, seq: this.seq, changes, ...(win ? { window: win } : {}) });
    this.onChange();
  }

  /** A custom message from Python; true when it was an edit acknowledgement (of any view). */
  handle(msg: unknown): boolean {
    const m = msg as { type?: unknown; view?: unknown; seq?: unknown } | null;
    if (!m || typeof m !== "object" || m.type !== "edit_done") return false;
    if (m.view === this.viewId && Number(m.seq) >= this.seq) this.settle();
    return true;
  }

  /** A payload arrived: it answers this view's edit when it says so. */
  payload(meta: Meta): void {
    if (meta.client_view === this.viewId && meta.client_seq >= this.seq) this.settle();
  }

  private settle(): void {
    if (!this.awaiting) return;
    this.awaiting = false;
    this.quiet = false;
    this.unquiet.cancel();
    this.safety.cancel();
    this.onChange();
  }

  dispose(): void {
    this.debounced.cancel();
    this.safety.cancel();
    this.unquiet.cancel();
  }
}
