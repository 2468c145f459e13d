// Theme changes: JupyterLab 4 swaps its theme stylesheet and sets data-jp-theme-name /
// data-jp-theme-light on <body>; VS Code changes body classes; the static export follows
// prefers-color-scheme. The --jp-* values may settle a moment after the attribute changes (the
// new stylesheet loads), so `cb` runs on the next frame and again a little later; the heatmap
// redraws only when the colours it painted with really changed.

export function watchTheme(cb: () => void): () => void {
  let timers: ReturnType<typeof setTimeout>[] = [];
  const fire = () => {
    for (const t of timers) clearTimeout(t);
    timers = [];
    requestAnimationFrame(cb);
    for (const ms of [150, 500, 1500]) timers.push(setTimeout(cb, ms));
  };
  const mo = typeof MutationObserver !== "undefined" ? new MutationObserver(fire) : null;
  const opts = { attributes: true, attributeFilter: ["data-jp-theme-name", "data-jp-theme-light", "class", "style"] };
  if (mo && document.body) mo.observe(document.body, opts);
  if (mo) mo.observe(document.documentElement, opts);
  // a theme stylesheet added to or removed from <head>
  if (mo && document.head) mo.observe(document.head, { childList: true });
  const mq = typeof matchMedia === "function" ? matchMedia("(prefers-color-scheme: dark)") : null;
  mq?.addEventListener?.("change", fire);
  return () => {
    mo?.disconnect();
    mq?.removeEventListener?.("change", fire);
    for (const t of timers) clearTimeout(t);
  };
}
