// Tiny DOM helper. Text only ever goes in through textContent; there is no innerHTML anywhere.

type Attrs = Record<string, string | number | boolean | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") e.className = String(v);
    else if (k === "text") e.textContent = String(v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return e;
}

/** Run `fn` once input has been quiet for `ms`; `flush` runs a pending call now. */
export function debounce(fn: () => void, ms: number) {
  let t: ReturnType<typeof setTimeout> | null = null;
  return {
    call() {
      if (t !== null) clearTimeout(t);
      t = setTimeout(() => {
        t = null;
        fn();
      }, ms);
    },
    pending() {
      return t !== null;
    },
    cancel() {
      if (t !== null) clearTimeout(t);
      t = null;
    },
    flush() {
      if (t !== null) {
        clearTimeout(t);
        t = null;
        fn();
      }
    },
  };
}
