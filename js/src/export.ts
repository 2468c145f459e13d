// The static HTML export's boot script (second bundle entry: static/export.js, inlined by
// resid_widgets/widgets/export.py). It reads the inlined bundle, CSS, traits and payload from
// <script type="application/json"> elements and drives the same `render({model, el})` as Jupyter
// through an in-memory model with anywidget's interface. No kernel: edits are ignored; details are
// answered by the widget itself when the export includes the full top-k (else an error reply).

type Handler = (...args: unknown[]) => void;

/** anywidget's model interface, in memory. Events: "change:<name>" and "msg:custom". */
export class StaticModel {
  private readonly handlers = new Map<string, Set<Handler>>();
  constructor(private readonly state: Record<string, unknown>) {}
  get(k: string): unknown {
    return this.state[k];
  }
  set(k: string, v: unknown): void {
    const old = this.state[k];
    this.state[k] = v;
    if (old !== v) this.emit(`change:${k}`, this, v);
  }
  on(evt: string, cb: Handler): void {
    if (!this.handlers.has(evt)) this.handlers.set(evt, new Set());
    this.handlers.get(evt)!.add(cb);
  }
  off(evt?: string | null, cb?: Handler | null): void {
    if (!evt) this.handlers.clear();
    else if (!cb) this.handlers.delete(evt);
    else this.handlers.get(evt)?.delete(cb);
  }
  emit(evt: string, ...args: unknown[]): void {
    for (const cb of [...(this.handlers.get(evt) ?? [])]) cb(...args);
  }
  save_changes(): void {}
  send(msg: unknown): void {
    const m = msg as { type?: string; req?: unknown } | null;
    if (m && m.type === "details") {
      setTimeout(() => this.emit("msg:custom", { type: "details", req: m.req, error: "not included in this export" }, []), 0);
    }
  }
}

const read = (id: string): unknown => JSON.parse(document.getElementById(id)!.textContent ?? "null");

async function importBundle(esm: string): Promise<{ default: { render: Function; initialize?: Function } }> {
  try {
    return await import(/* @vite-ignore */ URL.createObjectURL(new Blob([esm], { type: "text/javascript" })));
  } catch {
    return await import(/* @vite-ignore */ `data:text/javascript;charset=utf-8,${encodeURIComponent(esm)}`);
  }
}

async function boot(app: HTMLElement): Promise<void> {
  const esm = read("rw-esm") as string;
  const style = document.createElement("style");
  style.textContent = read("rw-css") as string;
  document.head.append(style);
  const bin = atob(read("rw-blob") as string);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const state = read("rw-state") as Record<string, unknown>;
  state._meta = read("rw-meta");
  state._payload = new DataView(bytes.buffer);
  state._static = true;
  if (typeof state._steer_payload_b64 === "string") {
    // the steering panel's after payload (ResidWidget.save_html): bytes, like _payload
    const after = atob(state._steer_payload_b64);
    const buf = new Uint8Array(after.length);
    for (let i = 0; i < after.length; i++) buf[i] = after.charCodeAt(i);
    state._steer_payload = new DataView(buf.buffer);
    delete state._steer_payload_b64;
  }
  const widget = (await importBundle(esm)).default;
  const model = new StaticModel(state);
  if (typeof widget.initialize === "function") await widget.initialize({ model });
  await widget.render({ model, el: app });
  app.dataset.ready = "1";
}

const app = document.getElementById("rw-app");
if (app) {
  boot(app).catch((e: unknown) => {
    const p = document.createElement("pre");
    p.className = "rw-export-error";
    p.textContent = `Could not start the widget: ${e instanceof Error && e.stack ? e.stack : String(e)}`;
    app.append(p);
    app.dataset.ready = "error";
  });
}
