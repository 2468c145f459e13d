// The anywidget model interface the views use (get/set/on/off/save_changes/send): JupyterLab,
// Notebook 7, VS Code, Colab and the static export's in-page model all provide it.

import type { WidgetModel } from "./contract.gen";

/* eslint-disable @typescript-eslint/no-explicit-any */
/** anywidget's model, typed by the traits of protocol.json (`WidgetModel`, generated): the same
 *  shape as anywidget's `AnyModel<T>` in `RenderProps<T>`. */
export interface AnyModel<T = WidgetModel> {
  get<K extends keyof T & string>(key: K): T[K];
  set<K extends keyof T & string>(key: K, value: T[K]): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
}

/** What anywidget passes to `render` (its `RenderProps<T>`), typed by the traits. */
export interface RenderProps<T = WidgetModel> {
  model: AnyModel<T>;
  el: HTMLElement;
}

/** Subscribe to model events; the returned function unsubscribes all of them. */
export function subscriber<T>(model: AnyModel<T>) {
  const offs: (() => void)[] = [];
  return {
    on(evt: string, cb: (...a: any[]) => void): void {
      model.on(evt, cb);
      offs.push(() => model.off(evt, cb));
    },
    dispose(): void {
      for (const off of offs.splice(0)) off();
    },
  };
}

/** A random id for one view of a widget (several views of one model each have their own). */
export function newViewId(): string {
  const c = globalThis.crypto;
  if (c && typeof c.getRandomValues === "function") {
    const b = c.getRandomValues(new Uint8Array(8));
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  return Math.random().toString(16).slice(2) + Date.now().toString(16);
}
